//! Black-box tests of the built binary: `healthcheck`, configuration errors, `config check`, and
//! the SIGTERM sequence of a real process.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::helpers::{builder, client, closed_port, spawn_app};

const BINARY: &str = env!("CARGO_BIN_EXE_agent-server");

/// The binary with an empty environment plus `vars`, so the host's settings cannot leak in.
fn agent_server(args: &[&str], vars: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BINARY);
    command.args(args).env_clear().envs(vars.iter().copied());
    command
}

fn output(args: &[&str], vars: &[(&str, &str)]) -> Output {
    agent_server(args, vars).output().expect("the binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn healthcheck_exits_0_against_a_live_server_and_1_against_nothing() {
    let app = spawn_app().await;
    let port = app.port.to_string();
    let by_url = output(&["healthcheck", "--url", &app.address], &[]);
    assert!(by_url.status.success(), "{}", stderr(&by_url));
    let by_port = output(&["healthcheck"], &[("PORT", &port)]);
    assert!(by_port.status.success(), "{}", stderr(&by_port));
    let by_ready = output(
        &["healthcheck", "--ready"],
        &[("PORT", &port), ("HOST", "0.0.0.0")],
    );
    assert!(by_ready.status.success(), "{}", stderr(&by_ready));

    let nothing = closed_port().to_string();
    let refused = output(&["healthcheck", "--timeout", "1s"], &[("PORT", &nothing)]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains(&format!("127.0.0.1:{nothing}/health")),
        "{}",
        stderr(&refused)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn healthcheck_ready_exits_1_while_the_server_is_not_ready() {
    // Built but not running: the startup gate is closed, so /ready is 503 and /health is 200.
    let application = builder(&[]).build().await.unwrap();
    let url = format!("http://127.0.0.1:{}", application.port());
    assert!(
        output(&["healthcheck", "--url", &url], &[])
            .status
            .success()
    );
    let not_ready = output(&["healthcheck", "--ready", "--url", &url], &[]);
    assert_eq!(not_ready.status.code(), Some(1));
    assert!(stderr(&not_ready).contains("503"), "{}", stderr(&not_ready));
}

#[test]
fn an_invalid_value_exits_non_zero_with_one_line_naming_the_variable() {
    let cases = [
        (vec![("PORT", "abc")], "PORT: 'abc' is not a port number"),
        (
            vec![("TEMPERATURE", "9")],
            "TEMPERATURE: must be a number from 0 to 2",
        ),
        (
            vec![("AGENT_PROFILE", "production"), ("OPENAI_API_KEY", "sk-x")],
            "DATABASE_URL is required in the production profile",
        ),
        (
            vec![("DATABASE_URL", "mysql://root:hunter2@db")],
            "DATABASE_URL: the scheme must be postgres://",
        ),
    ];
    for (vars, expected) in cases {
        let failed = output(&[], &vars);
        let message = stderr(&failed);
        assert!(!failed.status.success(), "{vars:?} must fail");
        assert!(message.contains(expected), "{vars:?}: {message}");
        assert_eq!(
            message.trim_end().lines().count(),
            1,
            "{vars:?}: one line: {message}"
        );
        assert!(!message.contains("hunter2"), "a secret leaked: {message}");
    }
}

#[test]
fn config_check_prints_effective_values_with_secrets_redacted() {
    let checked = output(
        &["config", "check"],
        &[
            ("OPENAI_API_KEY", "sk-hunter2"),
            ("PORT", "9100"),
            ("AGENT_SERVR__PORT", "1"),
        ],
    );
    assert!(checked.status.success(), "{}", stderr(&checked));
    let stdout = String::from_utf8_lossy(&checked.stdout);
    assert!(stdout.contains("configuration is valid"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|line| line.starts_with("server.port") && line.contains("= 9100  # PORT")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|line| line.starts_with("model.api_key") && line.contains("[redacted]")),
        "{stdout}"
    );
    assert!(
        stdout.contains("warning: unknown configuration variable AGENT_SERVR__PORT"),
        "{stdout}"
    );
    assert!(!stdout.contains("hunter2"), "{stdout}");

    let invalid = output(&["config", "check"], &[("WORKERS", "lots")]);
    assert_eq!(invalid.status.code(), Some(1));
    assert!(stderr(&invalid).contains("WORKERS"));
}

/// `config check` lists the declared HTTP tools, MCP servers and webhooks, their header values,
/// secrets and URL credentials redacted.
#[test]
fn config_check_lists_tools_and_mcp_servers_without_their_secrets() {
    let file = crate::helpers::config_file(
        r#"
        [[http_tools]]
        name = "weather"
        description = "Weather."
        url = "https://weather.example/api"
        parameters = { type = "object" }
        headers = { "X-Api-Key" = "hunter2-key" }

        [[mcp_servers]]
        name = "docs"
        url = "https://user:hunter2-pass@mcp.example/mcp"
        headers = { Authorization = "Bearer hunter2-token" }
        tools = ["search"]
        required = true
        require_approval = { never = { tool_names = ["search"] } }

        [builtin_tools]
        require_approval = "always"

        [[webhooks]]
        url = "https://hooks.example/agent"
        secret = ["whsec_aHVudGVyMi1zZWNyZXQ=", "whsec_bmV3ZXItc2VjcmV0"]
        callers = ["alice"]

        [[agents]]
        id = "support"
        model = "gpt-4o-mini"
        fallbacks = ["gateway"]
        tools = ["calculator", "docs__*"]
        callers = ["alice"]

        [[agents]]
        id = "research"
        context = { max_input_tokens = 8000, strategy = "compact", summarizer = "gateway" }

        [[models]]
        name = "gateway"
        base_url = "https://llm.example/v1"
        model = "claude-3-5-haiku"
        api_key = "hunter2-model-key"
        headers = { X-Team = "hunter2-team" }
        "#,
    );
    let checked = output(&["config", "check"], &[("AGENT_CONFIG", file.as_str())]);
    assert!(checked.status.success(), "{}", stderr(&checked));
    let stdout = String::from_utf8_lossy(&checked.stdout);
    assert!(
        stdout.contains("http tool weather: POST https://weather.example/api (timeout 10s, approval never, headers: X-Api-Key=<redacted>)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("mcp server docs: https://mcp.example/mcp (tools docs__* of [search], timeout 30s, connect timeout 5s, required, approval all but [search], headers: Authorization=<redacted>)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("webhook https://hooks.example/agent: events [response.completed, response.failed, response.cancelled, response.requires_action], callers [alice], secrets: 2 <redacted> (written in the file)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("agent support (default): models [gpt-4o-mini -> gateway], tools [calculator, docs__*], callers [alice]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("agent research: models [gpt-4o-mini], tools all, callers all, context compact at 8000 tokens, keeps 4 recent turns, summaries by gateway"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "callers [alice], context no budget (an overflow retried once with less history)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("model gateway: claude-3-5-haiku at https://llm.example/v1 (key: <redacted> (written in the file), headers: X-Team=<redacted>)"),
        "{stdout}"
    );
    assert!(!stdout.contains("hunter2"), "{stdout}");
    assert!(
        stdout.contains("built-in tools: approval always"),
        "{stdout}"
    );
    assert!(!stdout.contains("whsec_"), "{stdout}");
}

#[test]
fn version_prints_the_package_version() {
    let version = output(&["--version"], &[]);
    assert!(version.status.success());
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("agent-server {}", env!("CARGO_PKG_VERSION"))
    );
}

/// The binary serving with JSON logs on a free port and `vars`: the process, its log lines
/// still to read, and its port (read from its "listening" line).
fn serve_logging_json(
    vars: &[(&str, &str)],
) -> (
    std::process::Child,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
    u64,
) {
    let (child, lines, port, _) = serve_with_limits(None, vars);
    (child, lines, port)
}

/// [`serve_logging_json`] under `prlimit --nofile=<soft:hard>` when given; also answers the
/// log entries before "listening".
fn serve_with_limits(
    nofile: Option<&str>,
    vars: &[(&str, &str)],
) -> (
    std::process::Child,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
    u64,
    Vec<serde_json::Value>,
) {
    let mut all = vec![("PORT", "0"), ("AGENT_LOG_FORMAT", "json")];
    all.extend_from_slice(vars);
    let mut command = match nofile {
        None => agent_server(&[], &all),
        Some(limits) => {
            let mut command = Command::new("prlimit");
            command
                .args([&format!("--nofile={limits}"), BINARY])
                .env_clear()
                .envs(all.iter().copied());
            command
        }
    };
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut startup = Vec::new();
    let port = loop {
        let line = lines
            .next()
            .expect("the server logs that it listens")
            .unwrap();
        let entry: serde_json::Value = serde_json::from_str(&line).expect("log lines are JSON");
        if entry["fields"]["message"] == "listening" {
            break entry["fields"]["port"].as_u64().unwrap();
        }
        startup.push(entry);
    };
    (child, lines, port, startup)
}

/// The soft descriptor limit is raised to the hard one, both are logged, and the admission
/// limits fit within it, pools included.
#[test]
fn the_descriptor_limit_is_raised_and_the_admission_limits_fit_within_it() {
    let (mut child, _lines, _port, startup) = serve_with_limits(
        Some("1000:3000"),
        &[
            ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/unused"),
            ("AGENT_STORAGE__RUN_MIGRATIONS", "false"),
        ],
    );
    let _ = child.kill();
    let _ = child.wait();
    let find = |message: &str| {
        startup
            .iter()
            .find(|entry| entry["fields"]["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} line in {startup:?}"))["fields"]
            .clone()
    };
    let descriptors = find("descriptor limit");
    assert_eq!(
        (
            &descriptors["soft_before"],
            &descriptors["soft"],
            &descriptors["hard"]
        ),
        (
            &serde_json::json!(1000),
            &serde_json::json!(3000),
            &serde_json::json!(3000)
        )
    );
    let limits = find("admission limits");
    let used: u64 = [
        "max_connections",
        "refusal_band",
        "max_turns_in_flight",
        "reserved_descriptors",
    ]
    .iter()
    .map(|field| limits[field].as_u64().unwrap())
    .sum();
    assert!((2800..=3000).contains(&used), "{limits}");
}

#[tokio::test]
async fn sigterm_turns_readiness_off_then_the_process_exits_0() {
    let (mut child, lines, port) = serve_logging_json(&[
        ("AGENT_SERVER__SHUTDOWN_DELAY", "1s"),
        ("AGENT_HEALTH__CACHE_TTL", "0s"),
    ]);
    let address = format!("http://127.0.0.1:{port}");
    // "listening" is logged as the listener opens; the startup gate opens once the rest started.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while client()
        .get(format!("{address}/ready"))
        .send()
        .await
        .unwrap()
        .status()
        != 200
    {
        assert!(std::time::Instant::now() < until, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // Within the one-second shutdown delay readiness answers 503 while liveness still answers.
    let mut saw_draining = false;
    for _ in 0..50 {
        match client().get(format!("{address}/ready")).send().await {
            Ok(response) if response.status() == 503 => {
                saw_draining = true;
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(error) => panic!("the listener closed before readiness turned off: {error}"),
        }
    }
    assert!(saw_draining, "readiness never answered 503 after SIGTERM");

    let logged: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{logged:?}");
    let messages: Vec<&str> = logged
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|entry| entry["fields"]["message"].as_str().map(str::to_owned))
        .map(|message| {
            if message.starts_with("shutdown began") {
                "shutdown began"
            } else if message == "stopped" {
                "stopped"
            } else {
                ""
            }
        })
        .filter(|message| !message.is_empty())
        .collect();
    assert_eq!(messages, ["shutdown began", "stopped"]);
}

/// A storm of identical failures is one line with its cause per interval, not a line each:
/// 40 turns fail the same way (the model server refuses connections), and the process logs 40
/// access lines but the cause once.
#[tokio::test]
async fn a_storm_of_identical_failures_logs_its_cause_once_per_interval() {
    let model = format!("http://127.0.0.1:{}/v1", closed_port());
    let (mut child, lines, port) = serve_logging_json(&[
        ("AGENT_SERVER__SHUTDOWN_DELAY", "0s"),
        ("OPENAI_BASE_URL", &model),
        ("AGENT_MODEL__MAX_ATTEMPTS", "1"),
        ("AGENT_LOG_REPEAT_INTERVAL", "1h"),
    ]);
    for _ in 0..40 {
        let status = client()
            .post(format!("http://127.0.0.1:{port}/agent"))
            .json(&serde_json::json!({ "message": "hi" }))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 502);
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let entries: Vec<serde_json::Value> = lines
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str(&line).ok())
        .collect();
    child.wait().unwrap();
    let count = |message: &str| {
        entries
            .iter()
            .filter(|entry| entry["fields"]["message"] == message)
            .count()
    };
    assert_eq!(count("request completed"), 40, "{entries:?}");
    let failed: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|entry| entry["fields"]["message"] == "request failed")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(
        failed[0]["fields"]["code"], "model_unavailable",
        "{failed:?}"
    );
    assert!(failed[0]["span"]["request_id"].is_string(), "{failed:?}");
}

/// The caller's name, never its key, is in every log line of its requests.
#[tokio::test]
async fn log_lines_name_the_caller_and_never_show_its_key() {
    let (mut child, lines, port) = serve_logging_json(&[
        ("AGENT_SERVER__SHUTDOWN_DELAY", "0s"),
        ("AGENT_API_KEYS", "alice:secret-key-0123456789"),
    ]);
    let status = client()
        .post(format!("http://127.0.0.1:{port}/agent"))
        .header("authorization", "Bearer secret-key-0123456789")
        .json(&serde_json::json!({ "message": "hi" }))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let logged: Vec<String> = lines.map_while(Result::ok).collect();
    child.wait().unwrap();
    assert!(
        logged.iter().all(|line| !line.contains("secret-key")),
        "{logged:?}"
    );
    let completed: Vec<serde_json::Value> = logged
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| entry["fields"]["message"] == "request completed")
        .collect();
    assert_eq!(completed.len(), 1, "{logged:?}");
    assert_eq!(completed[0]["span"]["caller"], "alice", "{completed:?}");
}
