//! Bounded background work: the tasks a request leaves behind (releasing a lock, abandoning an
//! idempotency claim) run under a fixed number of slots. When every slot is taken the work is
//! dropped and counted instead of queued, so a dependency outage under load cannot pile up tasks
//! (and memory) without bound. Every such task is one that a lease's TTL makes moot anyway.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Semaphore;

/// Slots for background tasks, shared by the stores of every worker of one process.
#[derive(Debug)]
pub struct BackgroundWork {
    slots: Arc<Semaphore>,
    limit: usize,
    started: AtomicU64,
    dropped: AtomicU64,
}

impl Default for BackgroundWork {
    fn default() -> Self {
        Self::new(Self::DEFAULT_LIMIT)
    }
}

impl BackgroundWork {
    /// Tasks pending at most at once. A pending lock release holds about a kilobyte, so the
    /// bound is about a megabyte; past it, work is dropped (its lease's TTL frees what it held).
    pub const DEFAULT_LIMIT: usize = 1024;

    /// Room for `limit` pending tasks (at least one).
    pub fn new(limit: usize) -> Self {
        let limit = limit.max(1);
        Self {
            slots: Arc::new(Semaphore::new(limit)),
            limit,
            started: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Runs `work` in the background if a slot is free; answers false (and counts it dropped)
    /// when all are taken or there is no runtime to run it on.
    pub fn spawn(
        &self,
        what: &'static str,
        work: impl Future<Output = ()> + Send + 'static,
    ) -> bool {
        let runtime = tokio::runtime::Handle::try_current();
        let slot = Arc::clone(&self.slots).try_acquire_owned();
        match (runtime, slot) {
            (Ok(runtime), Ok(slot)) => {
                self.started.fetch_add(1, Ordering::Relaxed);
                runtime.spawn(async move {
                    work.await;
                    drop(slot);
                });
                true
            }
            _ => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    what,
                    limit = self.limit,
                    "background work dropped: every slot is taken"
                );
                false
            }
        }
    }

    /// Tasks running or waiting to retry now.
    pub fn pending(&self) -> usize {
        self.limit - self.slots.available_permits()
    }

    /// Tasks started since the process began.
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// Tasks dropped because every slot was taken.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The most tasks pending at once.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn work_beyond_the_limit_is_dropped_and_counted_and_slots_come_back() {
        let work = BackgroundWork::new(2);
        let (release, wait) = tokio::sync::watch::channel(false);
        for _ in 0..2 {
            let mut wait = wait.clone();
            assert!(work.spawn("test", async move {
                let _ = wait.wait_for(|done| *done).await;
            }));
        }
        assert!(!work.spawn("test", async {}));
        assert_eq!((work.pending(), work.started(), work.dropped()), (2, 2, 1));
        release.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            while work.pending() > 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the finished tasks give their slots back");
        assert!(work.spawn("test", async {}));
        assert_eq!((work.started(), work.dropped()), (3, 1));
    }

    #[test]
    fn without_a_runtime_work_is_dropped() {
        let work = BackgroundWork::new(1);
        assert!(!work.spawn("test", async {}));
        assert_eq!((work.pending(), work.dropped()), (0, 1));
    }
}
