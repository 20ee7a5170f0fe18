//! Contract suites: each storage trait's behaviour, written once and run with the same assertions
//! against every implementation (memory, and Postgres or Redis as real servers).

// Helpers outside #[test] functions may unwrap too: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

mod conversations;
mod idempotency;
mod locks;
mod outages;
mod rate_limits;

/// Instantiates a suite for one backend: `backend!(module_name, factory_expression; test_a, test_b)`.
/// The factory is awaited once per test, so each test gets fresh storage.
macro_rules! backend {
    ($name:ident, $factory:expr; $($test:ident),+ $(,)?) => {
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
