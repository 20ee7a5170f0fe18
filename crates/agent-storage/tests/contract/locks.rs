//! The `SessionLocks` contract.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agent_core::SessionId;
use agent_storage::{LockLease, MemoryStorage, SessionLocks, StorageError, acquire_lock};

use crate::{contract, until};

type Locks = Arc<dyn SessionLocks>;

const TTL: Duration = Duration::from_secs(30);

fn session(name: &str) -> SessionId {
    SessionId::parse(name).unwrap()
}

async fn memory() -> Locks {
    Arc::new(MemoryStorage::new())
}

async fn redis_backend_store() -> Locks {
    Arc::new(test_support::redis_coordination())
}

contract!(
    [
        a_held_lock_cannot_be_taken_until_released,
        only_the_owner_can_release,
        fencing_tokens_increase_with_every_acquisition,
        a_lock_whose_holder_vanished_expires_after_its_ttl,
        two_holders_never_overlap,
        acquiring_a_held_lock_without_waiting_fails_fast,
        a_dropped_guard_releases_the_lock,
    ];
    memory_backend => memory().await,
    redis_backend => redis_backend_store().await,
);

async fn a_held_lock_cannot_be_taken_until_released(locks: Locks) {
    let id = session("held");
    let lease = locks
        .try_acquire(&id, TTL)
        .await
        .unwrap()
        .expect("a free lock is taken");
    assert_eq!(locks.try_acquire(&id, TTL).await.unwrap(), None);
    assert!(
        locks
            .try_acquire(&session("other"), TTL)
            .await
            .unwrap()
            .is_some(),
        "locks are per session"
    );
    assert!(locks.release(&lease).await.unwrap());
    assert!(locks.try_acquire(&id, TTL).await.unwrap().is_some());
}

async fn only_the_owner_can_release(locks: Locks) {
    let id = session("owner");
    let lease = locks.try_acquire(&id, TTL).await.unwrap().unwrap();
    let impostor = LockLease {
        owner: "someone-else".into(),
        ..lease.clone()
    };
    assert!(!locks.release(&impostor).await.unwrap());
    assert_eq!(
        locks.try_acquire(&id, TTL).await.unwrap(),
        None,
        "still held by its owner"
    );
    assert!(locks.release(&lease).await.unwrap());
    assert!(
        !locks.release(&lease).await.unwrap(),
        "a second release finds nothing"
    );
}

async fn fencing_tokens_increase_with_every_acquisition(locks: Locks) {
    let id = session("fence");
    let mut previous = 0;
    for _ in 0..5 {
        let lease = locks.try_acquire(&id, TTL).await.unwrap().unwrap();
        assert!(
            lease.fencing_token > previous,
            "{} after {previous}",
            lease.fencing_token
        );
        previous = lease.fencing_token;
        locks.release(&lease).await.unwrap();
    }
}

async fn a_lock_whose_holder_vanished_expires_after_its_ttl(locks: Locks) {
    let id = session("vanished");
    let ttl = Duration::from_millis(500);
    let started = Instant::now();
    let abandoned = locks.try_acquire(&id, ttl).await.unwrap().unwrap();
    let held = locks.try_acquire(&id, TTL).await.unwrap();
    // Asserted only when the answer came within the TTL (a stalled machine proves nothing).
    if started.elapsed() < ttl {
        assert_eq!(held, None, "held until its TTL");
    }
    let next = Arc::new(tokio::sync::Mutex::new(None));
    until(Duration::from_secs(10), || {
        let (locks, id, next) = (Arc::clone(&locks), id.clone(), Arc::clone(&next));
        async move {
            let taken = locks.try_acquire(&id, TTL).await.unwrap();
            let freed = taken.is_some();
            *next.lock().await = taken;
            freed
        }
    })
    .await;
    assert!(started.elapsed() >= ttl, "not freed before its TTL");
    let next = next.lock().await.take().unwrap();
    assert!(next.fencing_token > abandoned.fencing_token);
    assert!(
        !locks.release(&abandoned).await.unwrap(),
        "the vanished holder no longer owns it"
    );
    assert_eq!(
        locks.try_acquire(&id, TTL).await.unwrap(),
        None,
        "and cannot free the new holder's"
    );
}

async fn two_holders_never_overlap(locks: Locks) {
    let id = session("exclusive");
    let inside = Arc::new(AtomicUsize::new(0));
    let entries = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (locks, id, inside, entries) = (
                Arc::clone(&locks),
                id.clone(),
                Arc::clone(&inside),
                Arc::clone(&entries),
            );
            tokio::spawn(async move {
                for _ in 0..5 {
                    let guard = acquire_lock(&locks, &id, TTL, Duration::from_secs(60))
                        .await
                        .unwrap();
                    assert_eq!(
                        inside.fetch_add(1, Ordering::SeqCst),
                        0,
                        "two holders at once"
                    );
                    entries.fetch_add(1, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                    guard.release().await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(entries.load(Ordering::SeqCst), 100);
}

async fn acquiring_a_held_lock_without_waiting_fails_fast(locks: Locks) {
    let id = session("busy");
    let _held = acquire_lock(&locks, &id, TTL, Duration::ZERO)
        .await
        .unwrap();
    let error = acquire_lock(&locks, &id, TTL, Duration::ZERO)
        .await
        .unwrap_err();
    assert!(matches!(error, StorageError::Locked(_)), "{error:?}");
    let error = acquire_lock(&locks, &id, TTL, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(
        matches!(error, StorageError::Locked(_)),
        "a bounded wait gives up: {error:?}"
    );
}

async fn a_dropped_guard_releases_the_lock(locks: Locks) {
    let id = session("dropped");
    drop(
        acquire_lock(&locks, &id, TTL, Duration::ZERO)
            .await
            .unwrap(),
    );
    // The release runs in the background; a short wait covers it, far below the 30 s TTL.
    let guard = acquire_lock(&locks, &id, TTL, Duration::from_secs(5)).await;
    assert!(guard.is_ok(), "{guard:?}");
}
