//! The `RateLimiter` contract.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_storage::{MemoryStorage, RateDecision, RateLimiter};

use crate::{contract, until};

type Limiter = Arc<dyn RateLimiter>;

const MINUTE: Duration = Duration::from_secs(60);

async fn memory() -> Limiter {
    Arc::new(MemoryStorage::new())
}

async fn redis_backend_store() -> Limiter {
    Arc::new(test_support::redis_coordination())
}

contract!(
    [
        requests_beyond_the_limit_get_a_retry_after,
        keys_are_counted_separately,
        a_new_window_starts_fresh,
        concurrent_checks_allow_exactly_the_limit,
    ];
    memory_backend => memory().await,
    redis_backend => redis_backend_store().await,
);

async fn requests_beyond_the_limit_get_a_retry_after(limiter: Limiter) {
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(limiter.check("client-a", 3, MINUTE).await.unwrap());
    }
    let remaining: Vec<RateDecision> = (0..3)
        .rev()
        .map(|remaining| RateDecision::Allowed { remaining })
        .collect();
    assert_eq!(answers, remaining);
    let RateDecision::Limited { retry_after } = limiter.check("client-a", 3, MINUTE).await.unwrap()
    else {
        panic!("the fourth request is limited");
    };
    assert!(
        retry_after > Duration::ZERO && retry_after <= MINUTE,
        "{retry_after:?}"
    );
}

async fn keys_are_counted_separately(limiter: Limiter) {
    assert!(matches!(
        limiter.check("key-1", 1, MINUTE).await.unwrap(),
        RateDecision::Allowed { .. }
    ));
    assert!(matches!(
        limiter.check("key-1", 1, MINUTE).await.unwrap(),
        RateDecision::Limited { .. }
    ));
    assert!(matches!(
        limiter.check("key-2", 1, MINUTE).await.unwrap(),
        RateDecision::Allowed { .. }
    ));
}

async fn a_new_window_starts_fresh(limiter: Limiter) {
    let window = Duration::from_millis(500);
    let started = Instant::now();
    assert!(matches!(
        limiter.check("short", 1, window).await.unwrap(),
        RateDecision::Allowed { .. }
    ));
    let second = limiter.check("short", 1, window).await.unwrap();
    // Asserted only when the answer came within the window (a stalled machine proves nothing).
    if started.elapsed() < window {
        assert!(matches!(second, RateDecision::Limited { .. }), "{second:?}");
    }
    until(Duration::from_secs(10), || {
        let limiter = Arc::clone(&limiter);
        async move {
            matches!(
                limiter.check("short", 1, window).await.unwrap(),
                RateDecision::Allowed { .. }
            )
        }
    })
    .await;
    assert!(
        started.elapsed() >= window,
        "not fresh before the window ended"
    );
}

async fn concurrent_checks_allow_exactly_the_limit(limiter: Limiter) {
    let checks: Vec<_> = (0..50)
        .map(|_| {
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move { limiter.check("burst", 10, MINUTE).await.unwrap() })
        })
        .collect();
    let mut allowed = 0;
    for check in checks {
        if matches!(check.await.unwrap(), RateDecision::Allowed { .. }) {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 10);
}
