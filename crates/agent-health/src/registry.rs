//! The service's health state: checks, the startup gate, the draining flag and a result cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::sync::Mutex;

use crate::check::{Criticality, HealthCheck};
use crate::error::CheckError;

/// The result of one check.
#[derive(Debug, Clone)]
pub struct CheckOutcome {
    pub name: String,
    pub criticality: Criticality,
    pub latency: Duration,
    pub result: Result<(), CheckError>,
}

/// The overall answer to "can this instance take traffic?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadinessStatus {
    /// Every check passed.
    Ready,
    /// Every critical check passed; at least one optional check failed.
    Degraded,
    NotReady(NotReadyReason),
}

impl ReadinessStatus {
    /// Whether traffic should be sent here (ready or degraded).
    pub fn is_ready(self) -> bool {
        !matches!(self, Self::NotReady(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReadyReason {
    /// The startup gate is still closed.
    Starting,
    /// Shutdown has begun.
    Draining,
    /// A critical check failed.
    CheckFailed,
}

/// A readiness answer: the status and every check's outcome (none while draining).
#[derive(Debug, Clone)]
pub struct Readiness {
    pub status: ReadinessStatus,
    pub checks: Arc<Vec<CheckOutcome>>,
    /// When the checks ran; older than now by at most the cache interval.
    pub checked_at: Instant,
}

/// Shared health state; cheap to clone.
#[derive(Debug, Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    checks: Vec<HealthCheck>,
    cache_ttl: Duration,
    started: AtomicBool,
    draining: AtomicBool,
    /// The last outcomes. The lock is held while checks run, so concurrent probes share one run.
    cache: Mutex<Option<(Instant, Arc<Vec<CheckOutcome>>)>>,
}

impl Health {
    /// Health state with these checks, reusing results for `cache_ttl`.
    pub fn new(checks: Vec<HealthCheck>, cache_ttl: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                checks,
                cache_ttl,
                started: AtomicBool::new(false),
                draining: AtomicBool::new(false),
                cache: Mutex::new(None),
            }),
        }
    }

    /// Opens the startup gate; it never closes again.
    pub fn mark_started(&self) {
        self.inner.started.store(true, Ordering::SeqCst);
    }

    pub fn is_started(&self) -> bool {
        self.inner.started.load(Ordering::SeqCst)
    }

    /// Makes readiness fail from now on; called as soon as shutdown begins.
    pub fn begin_draining(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// Runs (or reuses) the checks and folds them with the startup and draining state.
    pub async fn readiness(&self) -> Readiness {
        if self.is_draining() {
            return Readiness {
                status: ReadinessStatus::NotReady(NotReadyReason::Draining),
                checks: Arc::new(Vec::new()),
                checked_at: Instant::now(),
            };
        }
        let (checked_at, checks) = self.outcomes().await;
        let status = if self.is_draining() {
            ReadinessStatus::NotReady(NotReadyReason::Draining)
        } else if !self.is_started() {
            ReadinessStatus::NotReady(NotReadyReason::Starting)
        } else {
            fold(&checks)
        };
        Readiness {
            status,
            checks,
            checked_at,
        }
    }

    async fn outcomes(&self) -> (Instant, Arc<Vec<CheckOutcome>>) {
        let mut cache = self.inner.cache.lock().await;
        if let Some((checked_at, outcomes)) = cache.as_ref()
            && checked_at.elapsed() < self.inner.cache_ttl
        {
            return (*checked_at, Arc::clone(outcomes));
        }
        let outcomes = Arc::new(join_all(self.inner.checks.iter().map(HealthCheck::run)).await);
        let checked_at = Instant::now();
        *cache = Some((checked_at, Arc::clone(&outcomes)));
        (checked_at, outcomes)
    }
}

fn fold(outcomes: &[CheckOutcome]) -> ReadinessStatus {
    let failing = |criticality| {
        outcomes
            .iter()
            .any(|outcome| outcome.criticality == criticality && outcome.result.is_err())
    };
    if failing(Criticality::Critical) {
        ReadinessStatus::NotReady(NotReadyReason::CheckFailed)
    } else if failing(Criticality::Optional) {
        ReadinessStatus::Degraded
    } else {
        ReadinessStatus::Ready
    }
}
