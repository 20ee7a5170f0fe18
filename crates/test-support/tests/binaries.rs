//! The standalone binaries the benchmark and the end-to-end tests run: the fake model answers
//! chat completions (JSON and streamed) and counts requests; the bare baseline answers /health.
//! (This test also makes `cargo test` build them, which `cargo xtask e2e` relies on.)

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn request(port: u16, method: &str, path: &str, body: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

fn start(binary: &str, port: u16) -> Server {
    let server = Server(
        Command::new(binary)
            .args(["--port", &port.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while request(port, "GET", "/health", "").is_none() {
        assert!(Instant::now() < deadline, "{binary} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

#[test]
fn the_fake_model_echoes_the_last_user_message_and_counts_requests() {
    let port = free_port();
    let _server = start(env!("CARGO_BIN_EXE_fake-openai"), port);
    let body = r#"{"model":"m","messages":[{"role":"user","content":"first"},{"role":"assistant","content":"x"},{"role":"user","content":"hello there"}]}"#;
    let answer = request(port, "POST", "/v1/chat/completions", body).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains(r#""content":"echo: hello there""#),
        "{answer}"
    );
    let streamed = body.replace(r#""model":"m""#, r#""model":"m","stream":true"#);
    let stream = request(port, "POST", "/v1/chat/completions", &streamed).unwrap();
    assert!(
        stream.contains("text/event-stream") && stream.contains("data: [DONE]"),
        "{stream}"
    );
    let stats = request(port, "GET", "/stats", "").unwrap();
    assert!(
        stats.contains(r#""total":2"#) && stats.contains(r#""in_flight":0"#),
        "{stats}"
    );
}

#[test]
fn the_bare_baseline_answers_health() {
    let port = free_port();
    let _server = start(env!("CARGO_BIN_EXE_bare-health"), port);
    let answer = request(port, "GET", "/health", "").unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with(r#"{"status":"healthy"}"#),
        "{answer}"
    );
}
