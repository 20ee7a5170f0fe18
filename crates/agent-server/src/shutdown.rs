//! What starts a graceful shutdown: SIGTERM, SIGINT, or a [`ShutdownTrigger`] (tests, embedders).

use std::sync::Arc;

use tokio::sync::Notify;

/// Starts the same graceful shutdown as SIGTERM. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ShutdownTrigger {
    notify: Arc<Notify>,
}

impl ShutdownTrigger {
    /// Begins the shutdown sequence; calling it again has no further effect.
    pub fn trigger(&self) {
        self.notify.notify_one();
    }

    /// Completes when a signal arrives or [`Self::trigger`] is called; names the cause.
    pub(crate) async fn requested(&self) -> &'static str {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = terminate => "SIGTERM",
            _ = tokio::signal::ctrl_c() => "SIGINT",
            () = self.notify.notified() => "shutdown trigger",
        }
    }
}
