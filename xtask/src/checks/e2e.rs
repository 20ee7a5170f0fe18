//! `cargo xtask e2e`: builds the image, runs the stack with the fake model and an MCP server
//! (docker/compose.mcp.yaml), checks it over HTTP (a tool call through the MCP server included)
//! and with `docker inspect`, stops it during a stream, and always tears it down.

use std::process::Command;
use std::time::Duration;

use anyhow::ensure;
use dev_harness::http;
use xshell::Shell;

use crate::checks::stack::TestStack;
use crate::tasks::compose::random_secret;

const E2E_PROJECT: &str = "agent-e2e";

pub(crate) fn run(shell: &Shell) -> anyhow::Result<()> {
    let stack = TestStack::start(
        shell,
        E2E_PROJECT,
        &["docker/compose.mcp.yaml"],
        Vec::new(),
        &["up", "-d"],
    )?;
    let (port, password, api_key) = (stack.port, &stack.password, &stack.api_key);
    let container = stack.container("agent")?;
    let wrong_key = format!("wrong-key-{}", random_secret()?);
    smoke(port, api_key, &wrong_key)?;
    mcp_tool_call(port, api_key)?;
    inspect_container(&container, &stack.image, &[password, api_key])?;
    logs_leak_nothing(&container, &[password, api_key, &wrong_key])?;
    stop_during_stream(port, api_key, &container)?;
    println!("xtask: e2e passed");
    Ok(())
}

/// HTTP checks of the running stack.
fn smoke(port: u16, api_key: &str, wrong_key: &str) -> anyhow::Result<()> {
    let auth = format!("Bearer {api_key}");
    for path in ["/health", "/ready", "/startup"] {
        let (status, body) = request(port, "GET", path, None, None)?;
        ensure!(status == 200, "GET {path} answered {status}: {body}");
    }
    ensure!(request(port, "GET", "/health", None, None)?.1.trim() == r#"{"status":"healthy"}"#);
    let (status, _) = request(port, "POST", "/agent", None, Some(r#"{"message":"hi"}"#))?;
    ensure!(
        status == 401,
        "an unauthenticated request answered {status}"
    );
    let wrong = format!("Bearer {wrong_key}");
    let (status, body) = request(
        port,
        "POST",
        "/agent",
        Some(&wrong),
        Some(r#"{"message":"hi"}"#),
    )?;
    ensure!(
        status == 401 && body.contains("\"error\""),
        "a wrong API key answered {status}: {body}"
    );
    let (status, body) = request(
        port,
        "POST",
        "/agent",
        Some(&auth),
        Some(r#"{"message":"first turn","session_id":"e2e-session"}"#),
    )?;
    ensure!(
        status == 200 && body.contains("echo: first turn"),
        "turn 1: {status} {body}"
    );
    let (status, body) = request(
        port,
        "POST",
        "/agent",
        Some(&auth),
        Some(r#"{"message":"second turn","session_id":"e2e-session"}"#),
    )?;
    ensure!(
        status == 200 && body.contains("echo: second turn"),
        "turn 2: {status} {body}"
    );
    let (status, body) = request(port, "GET", "/sessions/e2e-session", Some(&auth), None)?;
    ensure!(
        status == 200 && body.matches("\"sequence\"").count() == 4,
        "history: {status} {body}"
    );
    let (status, body) = request(
        port,
        "POST",
        "/agent/stream",
        Some(&auth),
        Some(r#"{"message":"stream please"}"#),
    )?;
    ensure!(
        status == 200 && body.contains("event: done"),
        "stream: {status} {body}"
    );
    let (status, body) = request(port, "GET", "/metrics", None, None)?;
    ensure!(
        status == 200 && body.contains("http_requests_total"),
        "metrics: {status}"
    );
    println!(
        "xtask: smoke tests passed (probes, no key and a wrong key refused, two turns, history, stream, metrics)"
    );
    Ok(())
}

/// No secret, and not the wrong key a client tried, appears in any line the agent logged.
fn logs_leak_nothing(container: &str, secrets: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("docker").args(["logs", container]).output()?;
    let logs = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    ensure!(
        logs.lines().count() > 3,
        "the agent logged almost nothing: {logs}"
    );
    for secret in secrets {
        ensure!(
            !logs.contains(secret),
            "a secret or a presented API key appears in the agent's logs"
        );
    }
    println!(
        "xtask: no secret and no presented API key in the agent's {} log lines",
        logs.lines().count()
    );
    Ok(())
}

fn inspect_container(container: &str, image: &str, secrets: &[&str]) -> anyhow::Result<()> {
    let inspect = |format: &str, target: &str| -> anyhow::Result<String> {
        let output = Command::new("docker")
            .args(["inspect", "--format", format, target])
            .output()?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    let user = inspect("{{.Config.User}}", container)?;
    ensure!(
        user == "65532:65532",
        "the agent runs as {user:?}, not 65532"
    );
    let healthcheck = inspect("{{json .Config.Healthcheck.Test}}", container)?;
    ensure!(
        healthcheck.contains("agent-server") && healthcheck.contains("healthcheck"),
        "healthcheck: {healthcheck}"
    );
    ensure!(
        inspect("{{.HostConfig.ReadonlyRootfs}}", container)? == "true",
        "the root filesystem is writable"
    );
    let shell = Command::new("docker")
        .args(["exec", container, "/bin/sh", "-c", "true"])
        .output()?;
    ensure!(!shell.status.success(), "the image has a shell");
    let exposed = [
        inspect("{{json .Config.Env}}", container)?,
        inspect("{{json .Config.Labels}}", container)?,
        String::from_utf8_lossy(
            &Command::new("docker")
                .args(["history", "--no-trunc", image])
                .output()?
                .stdout,
        )
        .into_owned(),
    ];
    for secret in secrets {
        ensure!(
            exposed.iter().all(|text| !text.contains(secret)),
            "a secret appears in the container's env, labels or image history"
        );
    }
    println!(
        "xtask: the agent runs as 65532 with a read-only root, no shell, a healthcheck, and no secret in env, labels or history"
    );
    Ok(())
}

/// `docker stop` during a streaming turn: the stream completes, the container exits 0 and logs
/// the drain.
fn stop_during_stream(port: u16, api_key: &str, container: &str) -> anyhow::Result<()> {
    let auth = format!("Bearer {api_key}");
    let stream = std::thread::spawn(move || {
        request(
            port,
            "POST",
            "/agent/stream",
            Some(&auth),
            Some(r#"{"message":"sleep 2500 then answer"}"#),
        )
    });
    std::thread::sleep(Duration::from_millis(700));
    let stopped = Command::new("docker")
        .args(["stop", "--time", "15", container])
        .output()?;
    ensure!(stopped.status.success(), "docker stop failed");
    let (status, body) = stream
        .join()
        .map_err(|_| anyhow::anyhow!("the stream thread panicked"))??;
    ensure!(status == 200, "the stream answered {status}");
    ensure!(
        body.contains("event: done") || body.contains("event: shutdown"),
        "the stream ended without done or shutdown: {body}"
    );
    let exit = Command::new("docker")
        .args(["inspect", "--format", "{{.State.ExitCode}}", container])
        .output()?;
    let exit = String::from_utf8_lossy(&exit.stdout).trim().to_owned();
    ensure!(exit == "0", "the agent exited with {exit}");
    let logs = Command::new("docker").args(["logs", container]).output()?;
    let logs =
        String::from_utf8_lossy(&logs.stdout).into_owned() + &String::from_utf8_lossy(&logs.stderr);
    ensure!(
        logs.contains("shutdown began") && logs.contains("stopped"),
        "the log does not show the drain"
    );
    println!("xtask: docker stop during a stream: the stream ended cleanly, exit 0, drain logged");
    Ok(())
}

/// A request with the e2e defaults: an optional bearer token, a 30 s timeout.
/// One end-to-end tool call through the image: the fake model calls the MCP server's `echo`,
/// whose answer is stored as the turn's tool message.
fn mcp_tool_call(port: u16, api_key: &str) -> anyhow::Result<()> {
    let auth = format!("Bearer {api_key}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = request(port, "GET", "/tools", Some(&auth), None)?;
        ensure!(status == 200, "GET /tools answered {status}: {body}");
        if body.contains(r#""name":"everything__echo""#) && body.contains(r#""state":"connected""#)
        {
            break;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "the MCP server's tools did not appear: {body}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (status, body) = request(port, "GET", "/ready", None, None)?;
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    ensure!(
        status == 200 && ready["checks"]["mcp:everything"]["status"] == "up",
        "readiness with the MCP server: {status} {body}"
    );
    let message = r#"tool everything__echo {\"message\":\"through the image\"}"#;
    let (status, body) = request(
        port,
        "POST",
        "/agent",
        Some(&auth),
        Some(&format!(
            r#"{{"message":"{message}","session_id":"e2e-mcp"}}"#
        )),
    )?;
    ensure!(status == 200, "the MCP tool turn: {status} {body}");
    let (status, body) = request(port, "GET", "/sessions/e2e-mcp", Some(&auth), None)?;
    ensure!(
        status == 200 && body.contains("Echo: through the image"),
        "the MCP tool's answer is not in the stored turn: {status} {body}"
    );
    println!("xtask: an MCP tool call went through the image");
    Ok(())
}

fn request(
    port: u16,
    method: &'static str,
    path: &str,
    authorization: Option<&str>,
    json: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let headers: Vec<(&'static str, &str)> = authorization
        .map(|value| ("Authorization", value))
        .into_iter()
        .collect();
    Ok(http::call(
        port,
        method,
        path,
        &headers,
        json,
        Duration::from_secs(30),
    )?)
}
