//! Runs as this process executes them: the registry of its live runs (so that a cancel reaching
//! this replica stops its run at once, and a watcher here reads its events as they happen), the
//! ticket a turn holds for its run (which ends the run in the store however the turn ends), and
//! the executor that drives a run apart from the request that started it. A run's record and
//! terminal state are the store's ([`agent_storage::RunStore`]); a completed run is written by
//! its turn's store.

pub(crate) mod executor;
pub(crate) mod live;
pub(crate) mod queue;
pub(crate) mod reader;
pub(crate) mod upkeep;
pub(crate) mod waiting;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use agent_core::SessionId;

use agent_storage::{BackgroundWork, Ended, RunEnd, RunError, RunStatus, RunStore};
use live::{CancelReason, LiveRun};
use tokio::sync::Notify;

use crate::error::ApiError;

/// A run cancelled by a cancel request.
pub(crate) const CANCELLED: RunEnd<'static> = RunEnd::Cancelled {
    code: "run_cancelled",
    message: "the run was cancelled by its caller; nothing was stored",
};

/// A run whose client went away before it finished.
pub(crate) const DISCONNECTED: RunEnd<'static> = RunEnd::Cancelled {
    code: "client_disconnected",
    message: "the client went away before the run finished; nothing was stored",
};

/// A run still running when the drain window ended.
pub(crate) const SHUTDOWN: RunEnd<'static> = RunEnd::Failed {
    code: "shutdown",
    message: "the server shut down before the run finished; nothing was stored",
};

/// Ends kept to record at most: past it, a run the store missed is left to its lease.
const MAX_MISSED: usize = 10_000;

/// A new run's id: `run_` and 32 hex digits, a UUID v7 (time-ordered): each new run's key goes
/// at the end of the runs' primary key index, not on a random page of it (a random page touched
/// first after a checkpoint costs a full-page image in the WAL, per turn).
pub(crate) fn new_run_id() -> String {
    format!("run_{}", uuid::Uuid::now_v7().simple())
}

/// The runs this process is executing, by id.
#[derive(Debug, Default)]
pub(crate) struct RunRegistry {
    running: Mutex<HashMap<String, Arc<LiveRun>>>,
    /// Runs this process ended while its store was unavailable (a Postgres outage fails turns
    /// and the writes that end their runs alike): recorded again by the upkeep, and at once
    /// when a turn finds one still active on its session, so the session is not busy until the
    /// run's lease expires.
    missed: Mutex<HashMap<String, Missed>>,
    /// Wakes the dispatcher when a run is queued here.
    wake: Arc<Notify>,
    /// This process's name as a lease holder (unique per process start).
    holder: String,
}

impl RunRegistry {
    pub(crate) fn new() -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_default();
        Self {
            running: Mutex::default(),
            missed: Mutex::default(),
            wake: Arc::default(),
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

    /// Tells this process's dispatcher that a run was queued.
    pub(crate) fn wake_dispatcher(&self) {
        self.wake.notify_one();
    }

    pub(crate) fn dispatcher_wake(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// The run `id` if this process executes it.
    pub(crate) fn live(&self, id: &str) -> Option<Arc<LiveRun>> {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    /// Stops the run `id` if this process executes it; answers whether it did.
    pub(crate) fn cancel(&self, id: &str, reason: CancelReason) -> bool {
        self.live(id).map(|run| run.cancel(reason)).is_some()
    }

    /// The ids of the runs this process executes that the store has a record of (the others
    /// hold no lease).
    pub(crate) fn recorded_ids(&self) -> Vec<String> {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|run| run.is_recorded())
            .map(|run| run.id.clone())
            .collect()
    }

    /// The runs this process executes with no record in the store, started at least `after`
    /// ago.
    pub(crate) fn unrecorded_since(&self, after: Duration) -> Vec<Arc<LiveRun>> {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|run| {
                !run.is_recorded() && run.started_at.elapsed().is_ok_and(|ran| ran >= after)
            })
            .cloned()
            .collect()
    }

    /// The run this process executes on `session`, if any.
    pub(crate) fn live_on(&self, session: &SessionId) -> Option<Arc<LiveRun>> {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .find(|run| run.session_id.as_ref() == Some(session))
            .cloned()
    }

    /// Stops every run this process executes.
    pub(crate) fn cancel_all(&self, reason: CancelReason) -> usize {
        let running: Vec<Arc<LiveRun>> = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for run in &running {
            run.cancel(reason);
        }
        running.len()
    }

    /// Keeps `end` of run `id` to record later: the store failed to.
    fn missed(&self, run: &Arc<LiveRun>, end: &RunEnd<'_>) {
        let id = &run.id;
        let mut missed = self.missed.lock().unwrap_or_else(PoisonError::into_inner);
        if missed.len() < MAX_MISSED {
            let kept = Missed {
                run: Arc::clone(run),
                status: end.status(),
                error: end.error(),
            };
            missed.insert(id.to_owned(), kept);
        } else {
            tracing::warn!(run = %id, "too many run ends to record again; its lease will expire");
        }
    }

    /// Records the end of run `id` if this process ended it and the store missed it; answers
    /// whether the run is ended now.
    pub(crate) async fn record_missed(&self, store: &dyn RunStore, id: &str) -> bool {
        let kept = self
            .missed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned();
        match kept {
            Some(missed) => self.record(store, missed).await,
            None => false,
        }
    }

    /// Records every end the store missed, once.
    pub(crate) async fn record_all_missed(&self, store: &dyn RunStore) {
        let kept: Vec<Missed> = self
            .missed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for missed in kept {
            if !self.record(store, missed).await {
                // The store is still down: the rest would fail alike.
                return;
            }
        }
    }

    async fn record(&self, store: &dyn RunStore, missed: Missed) -> bool {
        let (code, message) = (missed.error.code.as_str(), missed.error.message.as_str());
        let end = match missed.status {
            RunStatus::Cancelled => RunEnd::Cancelled { code, message },
            _ => RunEnd::Failed { code, message },
        };
        let id = &missed.run.id;
        match missed.run.end_in(store, end).await {
            Ok(_) => {
                self.missed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(id);
                tracing::info!(run = %id, "a run's end was recorded after its store came back");
                true
            }
            Err(_) => false,
        }
    }

    fn register(&self, run: &Arc<LiveRun>) {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(run.id.clone(), Arc::clone(run));
    }

    fn deregister(&self, id: &str) {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }
}

/// The end of a run that the store missed, kept to record again.
#[derive(Debug, Clone)]
struct Missed {
    run: Arc<LiveRun>,
    status: RunStatus,
    error: RunError,
}

/// A run a turn executes: registered (live) while it runs, and ended in the store if the turn
/// ends without completing it. Dropped while still open (its executor was dropped), it ends the
/// run as cancelled in the background.
#[derive(Debug)]
pub(crate) struct RunTicket {
    live: Arc<LiveRun>,
    registry: Arc<RunRegistry>,
    store: Arc<dyn RunStore>,
    background: Arc<BackgroundWork>,
    /// Still to be ended by this ticket.
    open: bool,
}

impl RunTicket {
    pub(crate) fn new(
        live: LiveRun,
        registry: Arc<RunRegistry>,
        store: Arc<dyn RunStore>,
        background: Arc<BackgroundWork>,
    ) -> Self {
        let live = Arc::new(live);
        registry.register(&live);
        Self {
            live,
            registry,
            store,
            background,
            open: true,
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.live.id
    }

    pub(crate) fn live(&self) -> &Arc<LiveRun> {
        &self.live
    }

    /// The run was completed (or ended elsewhere): nothing left to end.
    pub(crate) fn close(&mut self) {
        self.open = false;
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

    /// Refuses the run before it began (its session is busy): a run with no record leaves
    /// none; a recorded one (claimed from the queue) fails with `error`.
    pub(crate) async fn refuse(&mut self, error: &ApiError) {
        if self.live.is_recorded() {
            self.fail(error).await;
        } else {
            self.close();
        }
    }

    /// Ends the run as `end` (if it is still active), now.
    pub(crate) async fn end(&mut self, end: RunEnd<'_>) {
        if !std::mem::take(&mut self.open) {
            return;
        }
        match self.live.end_in(self.store.as_ref(), end).await {
            Ok(Ended::Now(_) | Ended::Already(_)) => {}
            Ok(Ended::Missing) => tracing::warn!(run = %self.live.id, "a run to end was not found"),
            Err(error) => {
                tracing::warn!(run = %self.live.id, %error, "ending a run failed; recorded again later");
                self.registry.missed(&self.live, &end);
            }
        }
    }
}

impl Drop for RunTicket {
    fn drop(&mut self) {
        self.registry.deregister(&self.live.id);
        if !self.open {
            return;
        }
        let (store, live) = (Arc::clone(&self.store), Arc::clone(&self.live));
        let registry = Arc::clone(&self.registry);
        let spawned = self.background.spawn("run end", async move {
            if let Err(error) = live.end_in(store.as_ref(), DISCONNECTED).await {
                tracing::warn!(run = %live.id, %error, "ending a run failed; recorded again later");
                registry.missed(&live, &DISCONNECTED);
            }
        });
        if !spawned {
            tracing::warn!(run = %self.live.id, "no slot to end a cancelled run; recorded later");
            self.registry.missed(&self.live, &DISCONNECTED);
        }
    }
}
