//! Graceful shutdown: readiness fails at once, in-flight requests finish, then the server stops.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::helpers::{builder, client, spawn};

#[tokio::test]
async fn shutdown_fails_readiness_at_once_and_lets_the_slow_request_finish() {
    let started = Arc::new(Notify::new());
    let route_started = Arc::clone(&started);
    let app = spawn(builder(&[]).with_routes(move |config| {
        let started = Arc::clone(&route_started);
        config.route(
            "/slow",
            actix_web::web::get().to(move || {
                let started = Arc::clone(&started);
                async move {
                    started.notify_one();
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    "finished"
                }
            }),
        );
    }))
    .await;
    assert_eq!(app.get("/ready").await.status(), 200);

    let slow = tokio::spawn({
        let request = app.client.get(format!("{}/slow", app.address));
        async move { request.send().await }
    });
    started.notified().await;
    app.shutdown.trigger();

    // During the shutdown delay the listener still accepts, and readiness says "draining".
    let ready = client()
        .get(format!("{}/ready", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(
        (&body["status"], &body["reason"]),
        (&"not ready".into(), &"draining".into())
    );
    assert_eq!(
        client()
            .get(format!("{}/health", app.address))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let slow = slow
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(slow.status(), 200);
    assert_eq!(slow.text().await.unwrap(), "finished");

    app.server.await.unwrap().expect("the server stops cleanly");
    let after = client()
        .get(format!("http://127.0.0.1:{}/health", app.port))
        .send()
        .await;
    assert!(after.is_err(), "nothing listens after the shutdown");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_still_open_when_the_drain_window_ends_gets_a_shutdown_event() {
    use fake_openai::{FakeOpenAi, Scripted};
    let fake = FakeOpenAi::repeating(Scripted::Slow(
        Duration::from_secs(10),
        Box::new(Scripted::text("too late")),
    ))
    .await;
    let app = crate::helpers::spawn_with_model(
        &fake,
        &[
            ("AGENT_SERVER__SHUTDOWN_DELAY", "0s"),
            ("AGENT_SERVER__DRAIN_TIMEOUT", "2s"),
            ("AGENT_MODEL__REQUEST_TIMEOUT", "30s"),
        ],
    )
    .await;
    let response = app
        .stream(serde_json::json!({ "message": "long story", "session_id": "draining" }))
        .await;
    assert_eq!(response.status(), 200);
    app.shutdown.trigger();
    let body = response.text().await.unwrap();
    let last = test_support::sse::events(&body).pop().unwrap();
    assert_eq!(last.event, "shutdown", "{body}");
    let data = last.json();
    assert_eq!(data["stored"], false);
    assert_eq!(
        data["message"],
        "the server is shutting down; this turn was cancelled and nothing was stored",
        "every stream says it in the same words"
    );
    let stored = app.stored("draining").await;
    assert!(stored.is_empty(), "the cancelled turn stored nothing");
    app.server.await.unwrap().expect("the server stops cleanly");
}
