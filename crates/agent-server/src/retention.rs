//! The retention sweep: one task per process deletes the sessions idle longer than
//! `AGENT_STORAGE__SESSION_RETENTION`, in batches, each under the store's sweep lock (one replica
//! at a time) and taking each session's lock first (never one with a turn in progress). It is
//! the process's one periodic storage job; it stops with the application.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agent_storage::{ConversationStore, SessionLocks, Sweep};
use metrics::Counter;
use rand::Rng;
use tokio::task::JoinHandle;

/// Sessions deleted per batch: one transaction, its messages cascading.
pub(crate) const BATCH: usize = 200;
/// Batches per run at most, so one run is bounded (10,000 sessions); the next run goes on.
pub(crate) const MAX_BATCHES: usize = 50;

/// What the sweep counts: `agent_sessions_expired_total` and
/// `agent_retention_sweeps_total{outcome}`.
#[derive(Debug, Clone)]
pub(crate) struct RetentionMetrics {
    pub(crate) expired: Counter,
    /// A run that deleted what it found (possibly nothing).
    pub(crate) swept: Counter,
    /// A batch found another replica sweeping.
    pub(crate) skipped: Counter,
    /// A batch failed (storage unavailable); the next run retries.
    pub(crate) failed: Counter,
}

/// The sweep's task: a run every `interval` (±10 %, so replicas drift apart), deleting sessions
/// idle longer than `retention`. Runs until aborted.
pub(crate) fn spawn(
    retention: Duration,
    interval: Duration,
    conversations: Arc<dyn ConversationStore>,
    locks: Arc<dyn SessionLocks>,
    metrics: RetentionMetrics,
) -> JoinHandle<()> {
    tracing::info!(?retention, ?interval, "retention sweep on");
    tokio::spawn(async move {
        loop {
            let pause = interval.mul_f64(rand::rng().random_range(0.9..1.1));
            tokio::time::sleep(pause).await;
            run(retention, conversations.as_ref(), &locks, &metrics).await;
        }
    })
}

/// One run: batches until none is full, another replica is sweeping, a batch deletes nothing
/// (its sessions are all busy) or fails, or [`MAX_BATCHES`] are done.
async fn run(
    retention: Duration,
    conversations: &dyn ConversationStore,
    locks: &Arc<dyn SessionLocks>,
    metrics: &RetentionMetrics,
) {
    let Some(idle_before) = SystemTime::now().checked_sub(retention) else {
        return;
    };
    let mut total = Sweep::default();
    for _ in 0..MAX_BATCHES {
        match conversations.sweep_idle(idle_before, BATCH, locks).await {
            Ok(None) => {
                metrics.skipped.increment(1);
                break;
            }
            Ok(Some(sweep)) => {
                metrics.expired.increment(sweep.deleted);
                total.candidates += sweep.candidates;
                total.deleted += sweep.deleted;
                total.busy += sweep.busy;
                if sweep.candidates < BATCH || sweep.deleted == 0 {
                    break;
                }
            }
            Err(error) => {
                metrics.failed.increment(1);
                tracing::warn!(%error, deleted = total.deleted, "retention sweep failed; the next run retries");
                return;
            }
        }
    }
    metrics.swept.increment(1);
    if total.deleted > 0 || total.busy > 0 {
        tracing::info!(
            deleted = total.deleted,
            busy = total.busy,
            "retention sweep deleted idle sessions"
        );
    }
}
