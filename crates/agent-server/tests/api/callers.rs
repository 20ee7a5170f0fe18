//! Callers: API keys name who calls (`name:key`); keys sharing a name are one caller for rate
//! limits and idempotency (rotation keeps access), and the name, never the key, is what the
//! request's log lines carry.

use fake_openai::{FakeOpenAi, Scripted};
use serde_json::{Value, json};

use crate::helpers::{TestApp, error_code, spawn_with_model};

/// `POST /agent` as the holder of `key`, with an optional `Idempotency-Key`.
async fn post_as(app: &TestApp, key: &str, idempotency: Option<&str>) -> reqwest::Response {
    let mut request = app
        .client
        .post(format!("{}/agent", app.address))
        .header("authorization", format!("Bearer {key}"))
        .json(&json!({ "message": "pay" }));
    if let Some(idempotency) = idempotency {
        request = request.header("idempotency-key", idempotency);
    }
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_sharing_a_name_are_one_caller_for_idempotency_and_rate_limits() {
    let fake = FakeOpenAi::repeating(Scripted::text("paid")).await;
    let app = spawn_with_model(
        &fake,
        &[
            (
                "AGENT_API_KEYS",
                "alice:alice-old-0123456789,alice:alice-new-0123456789,bob:bob-0123456789",
            ),
            ("AGENT_RATE_LIMIT__REQUESTS", "3"),
            ("AGENT_RATE_LIMIT__WINDOW", "60s"),
        ],
    )
    .await;
    let first = post_as(&app, "alice-old-0123456789", Some("invoice-7")).await;
    assert_eq!(first.status(), 200);
    assert!(!first.headers().contains_key("idempotent-replayed"));
    // The rotated key is the same caller: the same Idempotency-Key replays.
    let rotated = post_as(&app, "alice-new-0123456789", Some("invoice-7")).await;
    assert_eq!(rotated.status(), 200);
    assert_eq!(rotated.headers()["idempotent-replayed"], "true");
    // Another caller's same Idempotency-Key is a key of its own.
    let bob = post_as(&app, "bob-0123456789", Some("invoice-7")).await;
    assert_eq!(bob.status(), 200);
    assert!(!bob.headers().contains_key("idempotent-replayed"));
    assert_eq!(fake.requests().await.len(), 2, "alice's turn ran once");

    // Alice's two keys share her limit of 3 (two requests so far).
    assert_eq!(
        post_as(&app, "alice-new-0123456789", None).await.status(),
        200
    );
    let limited = post_as(&app, "alice-old-0123456789", None).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(
        error_code(&limited.json::<Value>().await.unwrap()),
        "rate_limited"
    );
    assert_eq!(
        post_as(&app, "bob-0123456789", None).await.status(),
        200,
        "bob has his own limit"
    );
}
