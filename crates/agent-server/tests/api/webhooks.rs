//! Webhooks: the terminal events of background runs reach the operator's endpoints in OpenAI's
//! shape, signed per Standard Webhooks (checked here by computing the signatures anew), retried
//! until acknowledged with the same `webhook-id`, filtered by event and caller, never following
//! a redirect; foreground runs send none.

use std::time::{Duration, Instant};

use base64::Engine;
use fake_openai::{FakeOpenAi, Scripted};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::helpers::{TestApp, config_file, spawn_with_model};

/// "whsec_" and base64 of the keys.
const OLD_SECRET: &str = "whsec_b2xkIGtleSBvZiB0aGUgcm90YXRpb24=";
const NEW_SECRET: &str = "whsec_bmV3IGtleSBvZiB0aGUgcm90YXRpb24=";

fn key(secret: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap()
}

/// Checks a delivery's headers and signatures (one per secret); answers its body.
fn verified(request: &Request, secrets: &[&str]) -> Value {
    let header = |name: &str| request.headers[name].to_str().unwrap().to_owned();
    let (id, timestamp) = (header("webhook-id"), header("webhook-timestamp"));
    let sent_at: u64 = timestamp.parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(sent_at) < 60, "timestamp {sent_at}");
    let signatures: Vec<String> = header("webhook-signature")
        .split(' ')
        .map(str::to_owned)
        .collect();
    assert_eq!(signatures.len(), secrets.len(), "{signatures:?}");
    for (secret, signature) in secrets.iter().zip(&signatures) {
        let mut mac = Hmac::<Sha256>::new_from_slice(&key(secret)).unwrap();
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(&request.body);
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(signature, &format!("v1,{expected}"));
    }
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["id"], id.as_str());
    body
}

async fn received_at_least(server: &MockServer, count: usize, within: Duration) -> Vec<Request> {
    let until = Instant::now() + within;
    loop {
        let requests = server.received_requests().await.unwrap_or_default();
        if requests.len() >= count {
            return requests;
        }
        assert!(
            Instant::now() < until,
            "{} requests of {count} after {within:?}",
            requests.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn background(app: &TestApp, key: &str, message: &str) -> String {
    let response = app
        .client
        .post(format!("{}/agent", app.address))
        .bearer_auth(key)
        .json(&json!({"message": message, "background": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let run: Value = response.json().await.unwrap();
    run["run_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_background_runs_end_is_posted_signed_and_retried_with_its_id_until_acknowledged() {
    let everything = MockServer::start().await;
    // The first attempt fails; the retry is acknowledged.
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .mount(&everything)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&everything)
        .await;
    let failures_of_bob = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&failures_of_bob)
        .await;
    let file = config_file(&format!(
        r#"
        [[webhooks]]
        url = "{}/hooks"
        secret = ["{OLD_SECRET}", "{NEW_SECRET}"]

        [[webhooks]]
        url = "{}/bob"
        secret = "{NEW_SECRET}"
        events = ["response.failed"]
        callers = ["bob"]
        "#,
        everything.uri(),
        failures_of_bob.uri()
    ));
    let fake = FakeOpenAi::repeating(Scripted::text("done")).await;
    let app = spawn_with_model(
        &fake,
        &[
            ("AGENT_CONFIG", file.as_str()),
            ("AGENT_API_KEYS", "alice:key-a,bob:key-b"),
        ],
    )
    .await;
    // A foreground turn: no event.
    let foreground = app
        .client
        .post(format!("{}/agent", app.address))
        .bearer_auth("key-a")
        .json(&json!({"message": "now"}))
        .send()
        .await
        .unwrap();
    assert_eq!(foreground.status(), 200);
    let run = background(&app, "key-a", "later").await;

    let requests = received_at_least(&everything, 2, Duration::from_secs(10)).await;
    let bodies: Vec<Value> = requests
        .iter()
        .map(|request| verified(request, &[OLD_SECRET, NEW_SECRET]))
        .collect();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    // The retry is the same event.
    assert_eq!(bodies[0], bodies[1]);
    let event = &bodies[0];
    assert_eq!(event["object"], "event");
    assert_eq!(event["type"], "response.completed");
    assert_eq!(event["data"]["id"], run.as_str());
    assert!(event["id"].as_str().unwrap().starts_with("evt_"));
    assert!(event["created_at"].as_u64().unwrap() > 0);
    assert_eq!(requests[0].headers["content-type"], "application/json");

    // Bob's failures only: alice's completion was not sent there.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        failures_of_bob
            .received_requests()
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(everything.received_requests().await.unwrap().len(), 2);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("agent_webhook_deliveries_total{outcome=\"delivered\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("agent_webhook_deliveries_total{outcome=\"failed\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_a_cancelled_run_sends_its_event() {
    let elsewhere = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&elsewhere)
        .await;
    let redirecting = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(307).insert_header("location", format!("{}/x", elsewhere.uri())),
        )
        .mount(&redirecting)
        .await;
    let file = config_file(&format!(
        "[[webhooks]]\nurl = \"{}/hooks\"\nsecret = \"{NEW_SECRET}\"\n",
        redirecting.uri()
    ));
    let fake = FakeOpenAi::repeating(Scripted::Slow(
        Duration::from_secs(30),
        Box::new(Scripted::text("never")),
    ))
    .await;
    let app = spawn_with_model(&fake, &[("AGENT_CONFIG", file.as_str())]).await;
    let run = background(&app, "unused", "long").await;
    fake.received(1).await;
    let cancelled = app
        .client
        .post(format!("{}/runs/{run}/cancel", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 200);
    let requests = received_at_least(&redirecting, 2, Duration::from_secs(10)).await;
    let event = verified(&requests[0], &[NEW_SECRET]);
    assert_eq!(event["type"], "response.cancelled");
    assert_eq!(event["data"]["id"], run.as_str());
    assert!(elsewhere.received_requests().await.unwrap().is_empty());
}
