//! Bounded failure logs: a storm of identical failures must not become a storm of log lines. The
//! cause chain of a failed request (5xx) is logged once per distinct failure (code and chain) per
//! interval, by the first request of the interval and with its request id, saying how many like
//! it were suppressed since the last line; the access line of every request stays, and the
//! metrics count every one.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::ErrorCode;

/// Distinct failures remembered at once; past it, failures are told apart by code only.
const MAX_KINDS: usize = 512;

/// A failure to log: what [`crate::error::ApiError`] leaves on its 5xx response (and streams
/// pass directly).
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub(crate) status: u16,
    pub(crate) code: ErrorCode,
    /// The cause chain on one line.
    pub(crate) chain: String,
    /// A failure of the server's own (an error), rather than of a dependency (a warning).
    pub(crate) ours: bool,
}

/// The application's failure log.
#[derive(Debug)]
pub(crate) struct FailureLog {
    interval: Duration,
    /// Per (code, hash of the cause chain): a storm allocates no key per failure.
    windows: Mutex<HashMap<(ErrorCode, u64), Window>>,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    suppressed: u64,
}

impl FailureLog {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Logs `failure` unless one like it was logged less than an interval ago (inside the
    /// caller's span, which carries the request id).
    pub(crate) fn log(&self, failure: &Failure) {
        let Some(suppressed) = self.admit(failure.code, &failure.chain, Instant::now()) else {
            return;
        };
        let (status, code, error) = (failure.status, failure.code, &failure.chain);
        if failure.ours {
            tracing::error!(status, %code, %error, suppressed, "request failed");
        } else {
            tracing::warn!(status, %code, %error, suppressed, "request failed");
        }
    }

    /// Whether a failure with this code and chain is logged at `now`: `Some(suppressed)` with
    /// how many like it were not logged since the last time, or `None` to stay quiet.
    fn admit(&self, code: ErrorCode, chain: &str, now: Instant) -> Option<u64> {
        if self.interval.is_zero() {
            return Some(0);
        }
        let Ok(mut windows) = self.windows.lock() else {
            return Some(0);
        };
        if windows.len() >= MAX_KINDS {
            windows.retain(|_, window| now.duration_since(window.started) < self.interval);
        }
        let key = if windows.len() >= MAX_KINDS {
            (code, 0)
        } else {
            let mut hasher = DefaultHasher::new();
            chain.hash(&mut hasher);
            (code, hasher.finish())
        };
        match windows.get_mut(&key) {
            Some(window) if now.duration_since(window.started) < self.interval => {
                window.suppressed += 1;
                None
            }
            Some(window) => {
                let suppressed = window.suppressed;
                *window = Window {
                    started: now,
                    suppressed: 0,
                };
                Some(suppressed)
            }
            None => {
                windows.insert(
                    key,
                    Window {
                        started: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{FailureLog, MAX_KINDS};
    use crate::error::ErrorCode;

    #[test]
    fn one_line_per_failure_per_interval_with_the_count_suppressed_since() {
        let log = FailureLog::new(Duration::from_secs(10));
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let code = ErrorCode::ModelUnavailable;
        assert_eq!(
            log.admit(code, "the model server failed: refused", at(0)),
            Some(0)
        );
        for second in 1..10 {
            assert_eq!(
                log.admit(code, "the model server failed: refused", at(second)),
                None
            );
        }
        // Another failure, or the same code with another cause, has its own interval.
        assert_eq!(
            log.admit(code, "the model server failed: reset", at(5)),
            Some(0)
        );
        assert_eq!(
            log.admit(ErrorCode::StorageUnavailable, "redis", at(5)),
            Some(0)
        );
        assert_eq!(
            log.admit(code, "the model server failed: refused", at(10)),
            Some(9)
        );
        assert_eq!(
            log.admit(code, "the model server failed: refused", at(11)),
            None
        );
    }

    #[test]
    fn a_zero_interval_logs_every_one() {
        let log = FailureLog::new(Duration::ZERO);
        let now = Instant::now();
        for _ in 0..3 {
            assert_eq!(log.admit(ErrorCode::InternalError, "boom", now), Some(0));
        }
    }

    #[test]
    fn past_the_bound_failures_are_told_apart_by_code_only() {
        let log = FailureLog::new(Duration::from_secs(10));
        let now = Instant::now();
        for kind in 0..MAX_KINDS {
            assert_eq!(
                log.admit(ErrorCode::ModelTimeout, &format!("cause {kind}"), now),
                Some(0)
            );
        }
        assert_eq!(
            log.admit(ErrorCode::ModelTimeout, "one more cause", now),
            Some(0)
        );
        assert_eq!(
            log.admit(ErrorCode::ModelTimeout, "yet another cause", now),
            None
        );
        assert!(log.windows.lock().unwrap().len() <= MAX_KINDS + 1);
    }
}
