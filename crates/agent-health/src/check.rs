//! One named check: a criticality and an async function with a timeout.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;

use crate::error::CheckError;
use crate::registry::CheckOutcome;

/// Whether a failing check makes the service not ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Criticality {
    /// Failing means not ready (readiness answers 503).
    Critical,
    /// Failing means ready but degraded.
    Optional,
}

/// What a probe fails with: any error (its message and causes are the report).
pub type ProbeError = Box<dyn std::error::Error + Send + Sync>;

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), ProbeError>> + Send>>;
type CheckFn = dyn Fn() -> CheckFuture + Send + Sync;

/// A named readiness check.
#[derive(Clone)]
pub struct HealthCheck {
    name: String,
    criticality: Criticality,
    timeout: Duration,
    probe: Arc<CheckFn>,
}

impl fmt::Debug for HealthCheck {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("HealthCheck")
            .field("name", &self.name)
            .field("criticality", &self.criticality)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HealthCheck {
    /// A check that runs `probe` (an async function answering an error on failure: its message
    /// and its causes are what readiness reports) and counts it failed when it takes longer than
    /// `timeout`.
    pub fn new<F, Fut, E>(
        name: impl Into<String>,
        criticality: Criticality,
        timeout: Duration,
        probe: F,
    ) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<ProbeError>,
    {
        let probe: Arc<CheckFn> = Arc::new(move || {
            let probed = probe();
            Box::pin(async move { probed.await.map_err(Into::into) }) as CheckFuture
        });
        Self {
            name: name.into(),
            criticality,
            timeout,
            probe,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn criticality(&self) -> Criticality {
        self.criticality
    }

    /// Runs the check once, bounded by its timeout; a panic inside it is reported, not raised.
    pub(crate) async fn run(&self) -> CheckOutcome {
        let started = Instant::now();
        let bounded = tokio::time::timeout(
            self.timeout,
            AssertUnwindSafe((self.probe)()).catch_unwind(),
        );
        let result = match bounded.await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(error))) => Err(CheckError::Failed(reported(&*error))),
            Ok(Err(_panic)) => Err(CheckError::Panicked),
            Err(_elapsed) => Err(CheckError::TimedOut(self.timeout)),
        };
        if let Err(error) = &result {
            tracing::warn!(check = %self.name, %error, "readiness check failed");
        }
        CheckOutcome {
            name: self.name.clone(),
            criticality: self.criticality,
            latency: started.elapsed(),
            result,
        }
    }
}

/// An error and its causes on one line, as readiness reports them.
fn reported(error: &(dyn std::error::Error + 'static)) -> String {
    std::iter::successors(Some(error), |error| error.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}
