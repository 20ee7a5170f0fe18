//! Waiting for a session lock, and a guard that releases it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_core::SessionId;

use crate::background::BackgroundWork;
use crate::error::StorageError;
use crate::model::LockLease;
use crate::traits::SessionLocks;

/// A held session lock. Release it with [`LockGuard::release`]; if it is dropped instead, the
/// release runs in the background. A release that fails because the backend is unreachable is
/// retried in the background until it succeeds or the lock's TTL has passed: a lock store that
/// comes back with the lock still in it (Redis restarted from its snapshot) frees it at once
/// instead of keeping the session busy for the rest of the TTL. Background releases take a slot
/// of the store's [`BackgroundWork`]; with none free the release is dropped and the TTL frees the
/// lock.
#[derive(Debug)]
pub struct LockGuard {
    locks: Arc<dyn SessionLocks>,
    lease: Option<LockLease>,
}

impl LockGuard {
    pub fn fencing_token(&self) -> u64 {
        self.lease.as_ref().map_or(0, |lease| lease.fencing_token)
    }

    /// Releases the lock; answers false if it had already expired and been lost. When the
    /// release fails, answers the error and keeps retrying in the background.
    pub async fn release(mut self) -> Result<bool, StorageError> {
        let Some(lease) = self.lease.take() else {
            return Ok(false);
        };
        let answer = self.locks.release(&lease).await;
        if answer.is_err() {
            release_in_background(&self.locks, lease, RETRY_FIRST_DELAY);
        }
        answer
    }
}

/// The first retry's delay; it doubles up to [`RETRY_MAX_DELAY`], which is short so that a lock
/// store coming back frees its orphaned locks well within a waiting request's lock wait (the
/// first command after the outage may still fail on a broken pooled connection).
const RETRY_FIRST_DELAY: Duration = Duration::from_millis(100);
const RETRY_MAX_DELAY: Duration = Duration::from_millis(400);

/// Releases `lease` in a background task after `delay`, retrying (a release is a
/// compare-and-delete by owner, so retrying is always safe) until it succeeds or the lease's TTL
/// has passed and the lock has expired by itself. Lock stores also use it for a lock whose
/// acquisition may have happened although its answer was lost. Dropped (and counted) when the
/// store's [`BackgroundWork`] has no free slot.
pub(crate) fn release_in_background(
    locks: &Arc<dyn SessionLocks>,
    lease: LockLease,
    delay: Duration,
) {
    let work: &BackgroundWork = locks.background();
    work.spawn(
        "lock release",
        release_until_done(Arc::clone(locks), lease, delay),
    );
}

async fn release_until_done(locks: Arc<dyn SessionLocks>, lease: LockLease, mut delay: Duration) {
    let give_up = Instant::now() + lease.ttl;
    while Instant::now() + delay < give_up {
        tokio::time::sleep(delay).await;
        match locks.release(&lease).await {
            Ok(_) => {
                if !delay.is_zero() {
                    tracing::info!(session = %lease.session, "released a session lock after a failed attempt");
                }
                return;
            }
            Err(error) => {
                tracing::debug!(session = %lease.session, %error, "lock release failed; retrying");
                delay = (delay * 2).clamp(RETRY_FIRST_DELAY, RETRY_MAX_DELAY);
            }
        }
    }
    tracing::warn!(session = %lease.session, "lock release kept failing; its TTL has freed it");
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let Some(lease) = self.lease.take() else {
            return;
        };
        release_in_background(&self.locks, lease, Duration::ZERO);
    }
}

/// Takes the session lock, retrying with jittered backoff for up to `wait` (zero: one try).
pub async fn acquire_lock(
    locks: &Arc<dyn SessionLocks>,
    session: &SessionId,
    ttl: Duration,
    wait: Duration,
) -> Result<LockGuard, StorageError> {
    let deadline = Instant::now() + wait;
    let mut backoff = agent_core::backoff(Duration::from_millis(2), Duration::from_millis(50));
    loop {
        if let Some(lease) = locks.try_acquire(session, ttl).await? {
            return Ok(LockGuard {
                locks: Arc::clone(locks),
                lease: Some(lease),
            });
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(StorageError::Locked(session.to_string()));
        }
        let pause = backoff.next().unwrap_or(deadline - now).min(deadline - now);
        tokio::time::sleep(pause).await;
    }
}
