//! Admission control: beyond the turn or connection limit the answer is a fast `503 overloaded`
//! with `Retry-After`, nothing is stored, the probes keep answering, and service resumes as soon
//! as there is room.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use fake_openai::{FakeOpenAi, Scripted};
use serde_json::{Value, json};

use crate::helpers::{TestApp, builder, error_code, spawn, spawn_with_model};

/// Polls `/metrics` until it contains `line`.
async fn wait_for_metric(app: &TestApp, line: &str) {
    for _ in 0..100 {
        if app.metrics().await.contains(line) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("/metrics never showed {line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn turns_beyond_the_limit_get_503_overloaded_and_the_probes_still_answer() {
    let fake = FakeOpenAi::repeating(Scripted::Slow(
        Duration::from_millis(1500),
        Box::new(Scripted::text("done")),
    ))
    .await;
    let app = spawn_with_model(
        &fake,
        &[
            ("AGENT_SERVER__MAX_TURNS_IN_FLIGHT", "1"),
            ("AGENT_SERVER__OVERLOAD_RETRY_AFTER", "2s"),
        ],
    )
    .await;
    let first = {
        let (client, address) = (app.client.clone(), app.address.clone());
        tokio::spawn(async move {
            client
                .post(format!("{address}/agent"))
                .json(&json!({ "message": "first", "session_id": "admitted" }))
                .send()
                .await
                .unwrap()
        })
    };
    wait_for_metric(&app, "agent_turns_in_flight 1\n").await;

    let refused = app
        .agent(json!({ "message": "second", "session_id": "refused" }))
        .await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "2");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(error_code(&body), "overloaded");
    assert_eq!(body["error"]["retry_after"], 2);
    // A stream is refused before it begins: a plain JSON answer, not an event.
    let stream = app.stream(json!({ "message": "third" })).await;
    assert_eq!(stream.status(), 503);
    let body: Value = stream.json().await.unwrap();
    assert_eq!(error_code(&body), "overloaded");
    for probe in ["/health", "/ready", "/metrics"] {
        assert_eq!(app.get(probe).await.status(), 200, "{probe}");
    }
    wait_for_metric(&app, "agent_overload_refusals_total{reason=\"turns\"} 2\n").await;

    assert_eq!(first.await.unwrap().status(), 200);
    assert!(app.stored("refused").await.is_empty());
    let after = app
        .agent(json!({ "message": "again", "session_id": "refused" }))
        .await;
    assert_eq!(after.status(), 200, "the slot came back");
    assert_eq!(app.stored("admitted").await.len(), 2);
}

/// Sends `GET path` on a new connection and answers it with the status and the head.
fn request_on(port: u16, path: &str) -> (TcpStream, u16, String) {
    let mut connection = TcpStream::connect(("127.0.0.1", port)).unwrap();
    connection
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(connection, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0_u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            connection.read(&mut byte).unwrap(),
            1,
            "the head ended early"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    (connection, status, head)
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_the_limit_are_refused_after_the_request_line_and_closed() {
    let app = spawn(builder(&[("AGENT_SERVER__MAX_CONNECTIONS", "2")])).await;
    let port = app.port;
    let checks = tokio::task::spawn_blocking(move || {
        let (first, status, _) = request_on(port, "/openapi.json");
        assert_eq!(status, 200);
        let (second, status, _) = request_on(port, "/openapi.json");
        assert_eq!(status, 200);

        let (mut third, status, head) = request_on(port, "/openapi.json");
        assert_eq!(status, 503, "{head}");
        assert!(head.contains("connection: close"), "{head}");
        assert!(head.contains("retry-after: 1\r\n"), "{head}");
        let mut rest = String::new();
        third.read_to_string(&mut rest).unwrap();
        assert!(rest.contains("\"overloaded\""), "{rest}");
        // The probes are never refused, whatever the connection.
        for probe in ["/health", "/ready", "/metrics"] {
            let (_, status, head) = request_on(port, probe);
            assert_eq!(status, 200, "{probe}: {head}");
        }

        drop((first, second));
        for _ in 0..100 {
            let (_, status, _) = request_on(port, "/openapi.json");
            if status == 200 {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no connection was served again after the first two closed");
    });
    checks.await.unwrap();
    wait_for_metric(
        &app,
        "agent_overload_refusals_total{reason=\"connections\"}",
    )
    .await;
}
