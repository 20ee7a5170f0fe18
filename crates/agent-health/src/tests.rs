//! Tests of readiness folding, timeouts, caching and the startup and draining states.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Barrier;

use crate::{
    CheckError, Criticality, Health, HealthCheck, NotReadyReason, ProbeError, ReadinessStatus,
};

const LONG: Duration = Duration::from_secs(3600);

fn check(name: &str, criticality: Criticality, result: Result<(), &str>) -> HealthCheck {
    let result = result.map_err(str::to_owned);
    HealthCheck::new(name, criticality, Duration::from_secs(1), move || {
        let result = result.clone();
        async move { result }
    })
}

fn counting_check(counter: Arc<AtomicUsize>) -> HealthCheck {
    HealthCheck::new(
        "counted",
        Criticality::Critical,
        Duration::from_secs(1),
        move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Ok::<(), ProbeError>(()) }
        },
    )
}

async fn status_of(checks: Vec<HealthCheck>) -> ReadinessStatus {
    let health = Health::new(checks, Duration::ZERO);
    health.mark_started();
    health.readiness().await.status
}

#[tokio::test]
async fn readiness_folds_check_results_by_criticality() {
    let cases = [
        (vec![], ReadinessStatus::Ready),
        (
            vec![check("db", Criticality::Critical, Ok(()))],
            ReadinessStatus::Ready,
        ),
        (
            vec![check("db", Criticality::Critical, Err("down"))],
            ReadinessStatus::NotReady(NotReadyReason::CheckFailed),
        ),
        (
            vec![
                check("db", Criticality::Critical, Ok(())),
                check("cache", Criticality::Optional, Err("down")),
            ],
            ReadinessStatus::Degraded,
        ),
        (
            vec![
                check("db", Criticality::Critical, Err("down")),
                check("cache", Criticality::Optional, Err("down")),
            ],
            ReadinessStatus::NotReady(NotReadyReason::CheckFailed),
        ),
    ];
    for (checks, expected) in cases {
        let names: Vec<String> = checks.iter().map(|check| check.name().to_owned()).collect();
        assert_eq!(status_of(checks).await, expected, "checks {names:?}");
    }
}

#[tokio::test]
async fn readiness_is_not_ready_until_the_startup_gate_opens() {
    let health = Health::new(
        vec![check("db", Criticality::Critical, Ok(()))],
        Duration::ZERO,
    );
    let before = health.readiness().await;
    assert_eq!(
        before.status,
        ReadinessStatus::NotReady(NotReadyReason::Starting)
    );
    assert_eq!(
        before.checks.len(),
        1,
        "checks still run while starting, to show why"
    );
    health.mark_started();
    assert!(health.is_started());
    assert_eq!(health.readiness().await.status, ReadinessStatus::Ready);
}

#[tokio::test]
async fn draining_fails_readiness_without_running_checks() {
    let counter = Arc::new(AtomicUsize::new(0));
    let health = Health::new(vec![counting_check(Arc::clone(&counter))], Duration::ZERO);
    health.mark_started();
    health.begin_draining();
    let readiness = health.readiness().await;
    assert_eq!(
        readiness.status,
        ReadinessStatus::NotReady(NotReadyReason::Draining)
    );
    assert!(readiness.checks.is_empty());
    assert_eq!(counter.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_check_times_out_and_is_reported() {
    let timeout = Duration::from_millis(250);
    let hanging = HealthCheck::new("hangs", Criticality::Critical, timeout, || async {
        std::future::pending::<()>().await;
        Ok::<(), ProbeError>(())
    });
    let health = Health::new(vec![hanging], Duration::ZERO);
    health.mark_started();
    let readiness = health.readiness().await;
    assert_eq!(
        readiness.status,
        ReadinessStatus::NotReady(NotReadyReason::CheckFailed)
    );
    assert_eq!(
        readiness.checks[0].result,
        Err(CheckError::TimedOut(timeout))
    );
}

#[tokio::test]
async fn a_panicking_check_is_reported_as_failed() {
    let panicking = HealthCheck::new("panics", Criticality::Optional, LONG, || async {
        panic!("bug in a check");
        #[allow(unreachable_code)]
        Ok::<(), ProbeError>(())
    });
    let health = Health::new(vec![panicking], Duration::ZERO);
    health.mark_started();
    let readiness = health.readiness().await;
    assert_eq!(readiness.status, ReadinessStatus::Degraded);
    assert_eq!(readiness.checks[0].result, Err(CheckError::Panicked));
}

#[tokio::test]
async fn checks_run_concurrently() {
    // Each check waits for the other at a barrier: run one after the other, they would both
    // time out instead of passing.
    let barrier = Arc::new(Barrier::new(2));
    let checks = (0..2)
        .map(|index| {
            let barrier = Arc::clone(&barrier);
            HealthCheck::new(
                format!("c{index}"),
                Criticality::Critical,
                LONG,
                move || {
                    let barrier = Arc::clone(&barrier);
                    async move {
                        barrier.wait().await;
                        Ok::<(), ProbeError>(())
                    }
                },
            )
        })
        .collect();
    assert_eq!(status_of(checks).await, ReadinessStatus::Ready);
}

#[tokio::test]
async fn results_are_reused_within_the_cache_interval() {
    let counter = Arc::new(AtomicUsize::new(0));
    let cached = Health::new(vec![counting_check(Arc::clone(&counter))], LONG);
    for _ in 0..5 {
        cached.readiness().await;
    }
    assert_eq!(counter.load(Ordering::SeqCst), 1);

    let uncached_counter = Arc::new(AtomicUsize::new(0));
    let uncached = Health::new(
        vec![counting_check(Arc::clone(&uncached_counter))],
        Duration::ZERO,
    );
    for _ in 0..5 {
        uncached.readiness().await;
    }
    assert_eq!(uncached_counter.load(Ordering::SeqCst), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_probes_share_one_run() {
    let counter = Arc::new(AtomicUsize::new(0));
    let slow_counter = Arc::clone(&counter);
    let slow = HealthCheck::new("slow", Criticality::Critical, LONG, move || {
        slow_counter.fetch_add(1, Ordering::SeqCst);
        async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<(), ProbeError>(())
        }
    });
    let health = Health::new(vec![slow], LONG);
    let probes: Vec<_> = (0..20)
        .map(|_| {
            let health = health.clone();
            tokio::spawn(async move { health.readiness().await })
        })
        .collect();
    for probe in probes {
        probe.await.unwrap();
    }
    assert_eq!(counter.load(Ordering::SeqCst), 1);
}
