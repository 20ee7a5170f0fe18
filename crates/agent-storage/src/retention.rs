//! Deleting idle sessions: what every conversation store shares. A sweep takes the lock of each
//! session it deletes, without waiting, so a session with a turn in progress (whose request holds
//! its lock) is skipped, and a turn that arrives meanwhile waits for the sweep and then finds no
//! session: it starts an empty one.

use std::sync::Arc;
use std::time::Duration;

use agent_core::SessionId;
use futures_util::future::join_all;

use crate::error::StorageError;
use crate::lock::{LockGuard, acquire_lock};
use crate::traits::SessionLocks;

/// What one batch of a sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Idle sessions found (at most the batch size; fewer means none is left).
    pub candidates: usize,
    /// Of those, deleted with their messages.
    pub deleted: u64,
    /// Of those, skipped because a request held their lock (a turn in progress).
    pub busy: usize,
}

/// How long a sweep may hold a session's lock if it never releases it (a crash).
const SWEEP_LOCK_TTL: Duration = Duration::from_secs(30);

/// The locks a sweep took on idle sessions; released by [`SweepLocks::release`] (or in the
/// background when dropped).
#[derive(Debug)]
pub(crate) struct SweepLocks {
    held: Vec<(SessionId, LockGuard)>,
    pub(crate) busy: usize,
}

impl SweepLocks {
    /// Takes, without waiting, the lock of each candidate it can. Fails if the lock store does
    /// (the locks taken so far are then released in the background).
    pub(crate) async fn take(
        locks: &Arc<dyn SessionLocks>,
        candidates: Vec<SessionId>,
    ) -> Result<Self, StorageError> {
        let attempts = candidates.into_iter().map(|id| async move {
            let guard = acquire_lock(locks, &id, SWEEP_LOCK_TTL, Duration::ZERO).await;
            (id, guard)
        });
        let mut sweep = Self {
            held: Vec::new(),
            busy: 0,
        };
        let mut failure = None;
        for (id, guard) in join_all(attempts).await {
            match guard {
                Ok(guard) => sweep.held.push((id, guard)),
                Err(StorageError::Locked(_)) => sweep.busy += 1,
                Err(error) => failure = Some(error),
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(sweep),
        }
    }

    /// The sessions locked, which the sweep may delete.
    pub(crate) fn sessions(&self) -> impl Iterator<Item = &SessionId> {
        self.held.iter().map(|(id, _)| id)
    }

    /// Releases every lock (after the deletion is committed).
    pub(crate) async fn release(self) {
        let releases = self.held.into_iter().map(|(_, guard)| async move {
            if let Err(error) = guard.release().await {
                tracing::debug!(%error, "releasing a swept session's lock failed; retrying in the background");
            }
        });
        join_all(releases).await;
    }
}
