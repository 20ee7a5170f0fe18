//! Contract suites: each storage trait's behaviour, written once and run with the same assertions
//! against every implementation (memory, and Postgres or Redis as real servers).

// Helpers outside #[test] functions may unwrap too: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

mod conversations;
mod event_log;
mod idempotency;
mod locks;
mod migrations;
mod outages;
mod rate_limits;
mod runs;
mod waiting;
mod webhooks;

/// Runs each test of a suite against every backend:
/// `contract!([test_a, test_b]; memory_backend => memory().await, postgres_backend => postgres().await)`.
/// Each test is named once, so none can run on one backend and silently not on another. A
/// backend's factory is awaited once per test, so each test gets fresh storage.
macro_rules! contract {
    ($tests:tt; $($backend:ident => $factory:expr),+ $(,)?) => {
        $( $crate::backend!($backend, $factory; $tests); )+
    };
}
pub(crate) use contract;

/// One backend's module of a suite (see [`contract`]).
macro_rules! backend {
    ($name:ident, $factory:expr; [$($test:ident),+ $(,)?]) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($factory).await;
                }
            )+
        }
    };
}
pub(crate) use backend;

/// Waits until `freed` answers true, polling every 10 ms; panics if that takes longer than
/// `within`. How an expiry test waits for the expiry without guessing how long it takes.
pub(crate) async fn until<F: Future<Output = bool>>(
    within: std::time::Duration,
    mut freed: impl FnMut() -> F,
) {
    let deadline = std::time::Instant::now() + within;
    while !freed().await {
        assert!(
            std::time::Instant::now() < deadline,
            "not within {within:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
