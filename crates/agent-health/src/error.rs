//! Why a check failed.

use std::time::Duration;

/// A failed check, as reported in the readiness body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// The check ran and reported a problem.
    #[error("{0}")]
    Failed(String),
    /// The check did not finish within its timeout.
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
    /// The check panicked; a bug in the check, reported rather than propagated.
    #[error("the check panicked")]
    Panicked,
}
