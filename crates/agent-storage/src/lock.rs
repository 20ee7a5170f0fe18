//! Waiting for a session lock, and a guard that releases it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_core::SessionId;
use rand::Rng;

use crate::error::StorageError;
use crate::model::LockLease;
use crate::traits::SessionLocks;

/// A held session lock. Release it with [`LockGuard::release`]; if it is dropped instead, the
/// release runs in the background, and the TTL frees it if even that fails.
#[derive(Debug)]
pub struct LockGuard {
    locks: Arc<dyn SessionLocks>,
    lease: Option<LockLease>,
}

impl LockGuard {
    pub fn fencing_token(&self) -> u64 {
        self.lease.as_ref().map_or(0, |lease| lease.fencing_token)
    }

    /// Releases the lock; answers false if it had already expired and been lost.
    pub async fn release(mut self) -> Result<bool, StorageError> {
        match self.lease.take() {
            Some(lease) => self.locks.release(&lease).await,
            None => Ok(false),
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let Some(lease) = self.lease.take() else {
            return;
        };
        let locks = Arc::clone(&self.locks);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = locks.release(&lease).await {
                    tracing::warn!(session = %lease.session, %error, "lock release failed; the TTL will free it");
                }
            });
        }
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
    let mut backoff = Duration::from_millis(2);
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
        let jitter = rand::rng().random_range(0.5..1.5);
        let pause = backoff.mul_f64(jitter).min(deadline - now);
        tokio::time::sleep(pause).await;
        backoff = (backoff * 2).min(Duration::from_millis(50));
    }
}
