//! The standalone fake model the benchmark and the end-to-end tests run: it answers chat
//! completions (JSON and streamed) and counts requests. (This test also makes `cargo test` build
//! it, which `cargo xtask e2e` relies on.)

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use dev_harness::http::call;
use dev_harness::{Spawned, free_port, wait_for_port};

fn post(port: u16, body: &str) -> (u16, String) {
    call(
        port,
        "POST",
        "/v1/chat/completions",
        &[],
        Some(body),
        Duration::from_secs(10),
    )
    .unwrap()
}

/// The fake model on a free port, once it listens.
fn start() -> (Spawned, u16) {
    let port = free_port().unwrap();
    let server = Spawned::start(
        Command::new(env!("CARGO_BIN_EXE_fake-openai")).args(["--port", &port.to_string()]),
    )
    .unwrap();
    wait_for_port(port).unwrap();
    (server, port)
}

#[test]
fn the_fake_model_echoes_the_last_user_message_and_counts_requests() {
    let (_server, port) = start();
    let body = r#"{"model":"m","messages":[{"role":"user","content":"first"},{"role":"assistant","content":"x"},{"role":"user","content":"hello thére"}]}"#;
    let (status, answer) = post(port, body);
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer.contains(r#""content":"echo: hello thére""#),
        "{answer}"
    );
    let streamed = body.replace(r#""model":"m""#, r#""model":"m","stream":true"#);
    let (status, stream) = post(port, &streamed);
    assert_eq!(status, 200, "{stream}");
    assert!(stream.contains("data: [DONE]"), "{stream}");
    let (_, stats) = call(port, "GET", "/stats", &[], None, Duration::from_secs(10)).unwrap();
    assert!(
        stats.contains(r#""total":2"#) && stats.contains(r#""in_flight":0"#),
        "{stats}"
    );
}

#[test]
fn a_paced_stream_sends_its_chunks_that_far_apart() {
    let (_server, port) = start();
    let body =
        r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"pace 100 4 go"}]}"#;
    let started = std::time::Instant::now();
    let (status, stream) = post(port, body);
    let took = started.elapsed();
    assert_eq!(status, 200, "{stream}");
    assert_eq!(
        stream.matches(r#""content":"word ""#).count(),
        4,
        "{stream}"
    );
    assert!(stream.contains(r#""finish_reason":"stop""#), "{stream}");
    assert!(stream.ends_with("data: [DONE]\n\n"), "{stream}");
    // Four intervals: three between the chunks and one before the finish.
    assert!(took >= Duration::from_millis(400), "{took:?}");
}

#[test]
fn an_arithmetic_question_is_answered_through_the_calculator_tool() {
    let (_server, port) = start();
    let tools = r#""tools":[{"type":"function","function":{"name":"calculator","parameters":{}}}]"#;
    let asked = format!(
        r#"{{"model":"m",{tools},"messages":[{{"role":"user","content":"what is 2+3*4?"}}]}}"#
    );
    let (status, call) = post(port, &asked);
    assert_eq!(status, 200, "{call}");
    assert!(
        call.contains(r#""name":"calculator""#)
            && call.contains(r#""arguments":"{\"expression\":\"2+3*4\"}""#),
        "{call}"
    );
    let answered = format!(
        r#"{{"model":"m","stream":true,{tools},"messages":[{{"role":"user","content":"what is 2+3*4?"}},{{"role":"assistant","content":null,"tool_calls":[{{"id":"c","type":"function","function":{{"name":"calculator","arguments":"{{}}"}}}}]}},{{"role":"tool","tool_call_id":"c","content":"14"}}]}}"#
    );
    let (status, stream) = post(port, &answered);
    assert_eq!(status, 200, "{stream}");
    let pieces: Vec<&str> = stream
        .split(r#""content":""#)
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert_eq!(pieces, ["2+3*4 ", "= ", "14"], "{stream}");
    // Without a calculator on offer, the question is echoed like any message.
    let plain = r#"{"model":"m","messages":[{"role":"user","content":"what is 2+3*4?"}]}"#;
    let (_, echoed) = post(port, plain);
    assert!(echoed.contains("echo: what is 2+3*4?"), "{echoed}");
}

#[test]
fn json_text_is_answered_alone_only_under_a_json_response_format() {
    let (_server, port) = start();
    let body = r#"{"model":"m","messages":[{"role":"user","content":"json {\"a\":1}"}]FORMAT}"#;
    let (status, answer) = post(
        port,
        &body.replace(
            "FORMAT",
            r#","response_format":{"type":"json_schema","json_schema":{"name":"a"}}"#,
        ),
    );
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains(r#""content":"{\"a\":1}""#), "{answer}");
    let (_, plain) = post(port, &body.replace("FORMAT", ""));
    assert!(
        plain.contains(r#""content":"echo: json {\"a\":1}""#),
        "{plain}"
    );
}
