//! The three probes: codes, bodies, and their independence from slow dependencies.

use std::time::Duration;

use agent_health::{Criticality, HealthCheck};

use crate::helpers::{builder, run, spawn, spawn_app};

#[tokio::test]
async fn health_answers_healthy_without_touching_dependencies() {
    let app = spawn_app().await;
    let response = app.get("/health").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"status": "healthy"}));
}

#[tokio::test]
async fn startup_and_readiness_are_503_until_the_application_runs() {
    let application = builder(&[]).build().await.unwrap();
    let address = format!("http://127.0.0.1:{}", application.port());
    let client = crate::helpers::client();
    let get = |path: &'static str| {
        let request = client.get(format!("{address}{path}"));
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.unwrap())
        }
    };

    // Bound and answering, but the startup gate is still closed.
    assert_eq!(
        get("/startup").await,
        (503, serde_json::json!({"status": "starting"}))
    );
    let (status, body) = get("/ready").await;
    assert_eq!(
        (status, &body["status"], &body["reason"]),
        (503, &"not ready".into(), &"starting".into())
    );
    assert_eq!(
        get("/health").await.0,
        200,
        "liveness does not wait for startup"
    );

    let app = run(application);
    assert_eq!(
        app.get_json("/startup").await,
        (200, serde_json::json!({"status": "started"}))
    );
    let (status, body) = app.get_json("/ready").await;
    assert_eq!((status, &body["status"]), (200, &"ready".into()), "{body}");
}

#[tokio::test]
async fn readiness_reports_every_check_with_its_criticality_and_latency() {
    let app = spawn(
        builder(&[])
            .with_check(HealthCheck::new(
                "database",
                Criticality::Critical,
                Duration::from_secs(1),
                || async { Ok::<(), agent_health::ProbeError>(()) },
            ))
            .with_check(HealthCheck::new(
                "cache",
                Criticality::Optional,
                Duration::from_secs(1),
                || async { Err("connection refused".to_owned()) },
            )),
    )
    .await;
    let (status, body) = app.get_json("/ready").await;
    assert_eq!(
        status, 200,
        "an optional failure leaves the service ready: {body}"
    );
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["checks"]["database"]["status"], "up");
    assert_eq!(body["checks"]["database"]["criticality"], "critical");
    assert!(body["checks"]["database"]["latency_ms"].is_number());
    assert_eq!(body["checks"]["cache"]["status"], "down");
    assert_eq!(body["checks"]["cache"]["criticality"], "optional");
    assert_eq!(body["checks"]["cache"]["error"], "connection refused");
}

#[tokio::test]
async fn readiness_is_503_when_a_critical_check_fails() {
    let app = spawn(builder(&[]).with_check(HealthCheck::new(
        "database",
        Criticality::Critical,
        Duration::from_secs(1),
        || async { Err("password authentication failed".to_owned()) },
    )))
    .await;
    let (status, body) = app.get_json("/ready").await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "not ready");
    assert_eq!(body["reason"], "critical_check_failed");
    assert_eq!(body["checks"]["database"]["status"], "down");
    assert_eq!(app.get("/health").await.status(), 200);
}

#[tokio::test]
async fn while_a_check_hangs_health_answers_and_readiness_answers_within_the_check_timeout() {
    let timeout = Duration::from_millis(500);
    let hanging = HealthCheck::new("upstream", Criticality::Critical, timeout, || async {
        std::future::pending::<Result<(), String>>().await
    });
    let app = spawn(builder(&[]).with_check(hanging)).await;

    let ready = tokio::spawn({
        let request = app.client.get(format!("{}/ready", app.address));
        async move { request.send().await.unwrap() }
    });
    // /health is answered while /ready is still waiting on the hanging check.
    for _ in 0..5 {
        assert_eq!(app.get("/health").await.status(), 200);
    }
    let ready = ready.await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["upstream"]["error"], "timed out after 500ms");
}
