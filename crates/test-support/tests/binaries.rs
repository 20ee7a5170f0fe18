//! The benchmark's baseline binary answers `/health` as agent-server does.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use dev_harness::http::call;
use dev_harness::{Spawned, free_port, wait_for_port};

#[test]
fn the_bare_baseline_answers_health() {
    let port = free_port().unwrap();
    let _server = Spawned::start(
        Command::new(env!("CARGO_BIN_EXE_bare-health")).args(["--port", &port.to_string()]),
    )
    .unwrap();
    wait_for_port(port).unwrap();
    let answer = call(port, "GET", "/health", &[], None, Duration::from_secs(10)).unwrap();
    assert_eq!(answer, (200, r#"{"status":"healthy"}"#.to_owned()));
}
