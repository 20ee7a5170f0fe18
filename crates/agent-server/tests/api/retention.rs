//! Retention: with `AGENT_STORAGE__SESSION_RETENTION` set, the server's sweep deletes sessions
//! idle longer, and never one whose turn is running.

use std::time::Duration;

use fake_openai::{FakeOpenAi, Scripted};
use serde_json::json;

use crate::helpers::spawn_replicas;

/// Sessions idle past the retention are deleted (404 afterwards) and counted; a session kept
/// busy by a slow turn outlives its idle time, and its turn is stored; the usage stays.
#[tokio::test(flavor = "multi_thread")]
async fn idle_sessions_expire_and_a_turn_in_progress_keeps_its_session() {
    let fake = FakeOpenAi::start(vec![
        Scripted::text("first"),
        Scripted::text("first"),
        Scripted::Slow(
            Duration::from_millis(1800),
            Box::new(Scripted::text("slow")),
        ),
    ])
    .await;
    // Two replicas sweeping the same database: one at a time, and nothing is deleted twice.
    let replicas = spawn_replicas(
        &fake,
        &[
            ("AGENT_STORAGE__SESSION_RETENTION", "1s"),
            ("AGENT_STORAGE__RETENTION_SWEEP_INTERVAL", "100ms"),
        ],
        2,
    )
    .await;
    let app = &replicas[0];
    let first = |session: &'static str| async move {
        let answer = app
            .agent(json!({ "message": "hi", "session_id": session }))
            .await;
        assert_eq!(answer.status(), 200);
    };
    first("forgotten").await;
    first("busy").await;
    // At once: the slow turn holds "busy"'s lock across the time it becomes idle.
    let slow = replicas[1].agent(json!({ "message": "take your time", "session_id": "busy" }));
    let answer = slow.await;
    assert_eq!(answer.status(), 200, "the turn in progress was stored");
    let busy = app.get_json("/sessions/busy").await;
    assert_eq!(busy.0, 200);
    assert_eq!(busy.1["turn_count"], 2);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let forgotten = app.get("/sessions/forgotten").await.status();
        if forgotten == 404 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never swept");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let expired: f64 = [&replicas[0], &replicas[1]]
        .iter()
        .map(|app| async move { counter(&app.metrics().await, "agent_sessions_expired_total") })
        .collect::<futures_util::future::JoinAll<_>>()
        .await
        .into_iter()
        .sum();
    assert!(expired >= 1.0, "counted");
    let usage = app.get_json("/usage").await.1;
    assert_eq!(
        usage["usage"][0]["turns"], 3,
        "usage outlives its sessions: {usage}"
    );
}

/// The value of an unlabelled counter in Prometheus text (0 when absent).
fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}
