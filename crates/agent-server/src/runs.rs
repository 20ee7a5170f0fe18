//! Runs as this process executes them: the registry of the runs it is executing (so that a
//! cancel reaching this replica stops its run at once) and the ticket a turn holds for its run,
//! which ends the run in the store however the turn ends. A run's record and its terminal state
//! are the store's ([`agent_storage::RunStore`]); a completed run is written by its turn's store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use agent_storage::{BackgroundWork, Ended, RunEnd, RunStore};
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;

/// The error code and message of a run cancelled by a cancel request.
pub(crate) const CANCELLED: RunEnd<'static> = RunEnd::Cancelled {
    code: "cancelled",
    message: "the run was cancelled by its caller",
};

/// The error code and message of a run whose client went away before it finished.
pub(crate) const DISCONNECTED: RunEnd<'static> = RunEnd::Cancelled {
    code: "client_disconnected",
    message: "the client went away before the run finished; nothing was stored",
};

/// The runs this process is executing, by id: each one's cancellation token.
#[derive(Debug, Default)]
pub(crate) struct RunRegistry {
    running: Mutex<HashMap<String, CancellationToken>>,
    /// This process's name as a lease holder (unique per process start).
    holder: String,
}

impl RunRegistry {
    pub(crate) fn new() -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_default();
        Self {
            running: Mutex::default(),
            holder: format!(
                "{host}/{}/{}",
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            ),
        }
    }

    /// Who holds the leases of this process's runs.
    pub(crate) fn holder(&self) -> &str {
        &self.holder
    }

    /// Stops the run `id` if this process executes it; answers whether it did.
    pub(crate) fn cancel(&self, id: &str) -> bool {
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        running.get(id).map(CancellationToken::cancel).is_some()
    }

    fn register(&self, id: &str) -> CancellationToken {
        let token = CancellationToken::new();
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.to_owned(), token.clone());
        token
    }

    fn deregister(&self, id: &str) {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }
}

/// A run a turn executes: registered while it runs, and ended in the store if the turn ends
/// without completing it. Dropped while still open (the request went away), it ends the run as
/// cancelled in the background.
#[derive(Debug)]
pub(crate) struct RunTicket {
    id: String,
    token: CancellationToken,
    registry: Arc<RunRegistry>,
    store: Arc<dyn RunStore>,
    background: Arc<BackgroundWork>,
    /// Still to be ended by this ticket.
    open: bool,
}

impl RunTicket {
    pub(crate) fn new(
        id: String,
        registry: Arc<RunRegistry>,
        store: Arc<dyn RunStore>,
        background: Arc<BackgroundWork>,
    ) -> Self {
        let token = registry.register(&id);
        Self {
            id,
            token,
            registry,
            store,
            background,
            open: true,
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The run was completed (or ended elsewhere): nothing left to end.
    pub(crate) fn close(&mut self) {
        self.open = false;
    }

    /// A clone of the run's cancellation token (for a `select!` that also moves the ticket).
    pub(crate) fn cancellation(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Fails the run with the error its turn answers.
    pub(crate) async fn fail(&mut self, error: &ApiError) {
        let (code, message) = (error.code().to_string(), error.message());
        let end = RunEnd::Failed {
            code: &code,
            message: &message,
        };
        self.end(end).await;
    }

    /// Ends the run as `end` (if it is still active), now.
    pub(crate) async fn end(&mut self, end: RunEnd<'_>) {
        if !std::mem::take(&mut self.open) {
            return;
        }
        match self.store.end_run(&self.id, end).await {
            Ok(Ended::Now(_) | Ended::Already(_)) => {}
            Ok(Ended::Missing) => tracing::warn!(run = %self.id, "a run to end was not found"),
            // Its lease will expire and any replica will fail it as lost.
            Err(error) => {
                tracing::warn!(run = %self.id, %error, "ending a run failed; its lease will expire");
            }
        }
    }
}

impl Drop for RunTicket {
    fn drop(&mut self) {
        self.registry.deregister(&self.id);
        if !self.open {
            return;
        }
        let (store, id) = (Arc::clone(&self.store), self.id.clone());
        let spawned = self.background.spawn("run end", async move {
            if let Err(error) = store.end_run(&id, DISCONNECTED).await {
                tracing::warn!(run = %id, %error, "ending a run failed; its lease will expire");
            }
        });
        if !spawned {
            tracing::warn!(run = %self.id, "no slot to end a cancelled run; its lease will expire");
        }
    }
}
