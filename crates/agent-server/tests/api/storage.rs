//! The storage wiring: backends chosen from configuration, migrations at startup (once, under an
//! advisory lock, even with two processes racing), `agent-server migrate`, and storage checks.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::helpers::{builder, client, closed_port, spawn};

const BINARY: &str = env!("CARGO_BIN_EXE_agent-server");

#[tokio::test(flavor = "multi_thread")]
async fn with_postgres_and_redis_readiness_reports_both() {
    let database = test_support::fresh_database_url().await;
    let redis = test_support::redis_url();
    let app = spawn(builder(&[
        ("DATABASE_URL", &database),
        ("REDIS_URL", &redis),
    ]))
    .await;
    let (status, body) = app.get_json("/ready").await;
    assert_eq!((status, &body["status"]), (200, &"ready".into()), "{body}");
    assert_eq!(body["checks"]["postgres"]["status"], "up");
    assert_eq!(body["checks"]["postgres"]["criticality"], "critical");
    assert_eq!(body["checks"]["redis"]["status"], "up");
    assert_eq!(body["checks"]["redis"]["criticality"], "optional");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_redis_the_service_is_ready_but_degraded() {
    let database = test_support::fresh_database_url().await;
    let nowhere = format!("redis://127.0.0.1:{}", closed_port());
    let app = spawn(builder(&[
        ("DATABASE_URL", &database),
        ("REDIS_URL", &nowhere),
    ]))
    .await;
    let (status, body) = app.get_json("/ready").await;
    assert_eq!(
        (status, &body["status"]),
        (200, &"degraded".into()),
        "{body}"
    );
    assert_eq!(body["checks"]["redis"]["status"], "down");
    assert_eq!(body["checks"]["postgres"]["status"], "up");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_behind_the_schema_is_not_ready() {
    let database = test_support::fresh_database_url().await;
    let app = spawn(builder(&[
        ("DATABASE_URL", &database),
        ("AGENT_STORAGE__RUN_MIGRATIONS", "false"),
    ]))
    .await;
    let (status, body) = app.get_json("/ready").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["postgres"]["status"], "down");
    assert_eq!(
        body["checks"]["postgres"]["error"],
        "the schema is not migrated"
    );

    let migrated = Command::new(BINARY)
        .arg("migrate")
        .env_clear()
        .env("DATABASE_URL", &database)
        .output()
        .unwrap();
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    assert!(String::from_utf8_lossy(&migrated.stdout).starts_with("applied migrations: "));
    let (status, body) = app.get_json("/ready").await;
    assert_eq!(
        status, 200,
        "ready once migrated, without a restart: {body}"
    );

    let again = Command::new(BINARY)
        .arg("migrate")
        .env_clear()
        .env("DATABASE_URL", &database)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).starts_with("the schema is up to date"));
}

#[test]
fn migrate_without_a_database_fails_clearly() {
    let output = Command::new(BINARY)
        .arg("migrate")
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("DATABASE_URL is not set"));
}

#[test]
fn an_unreachable_database_stops_startup_after_the_startup_timeout() {
    let url = format!(
        "postgres://postgres:hunter2@127.0.0.1:{}/agent",
        closed_port()
    );
    let output = Command::new(BINARY)
        .env_clear()
        .envs([
            ("PORT", "0"),
            ("DATABASE_URL", url.as_str()),
            ("AGENT_STORAGE__STARTUP_TIMEOUT", "1s"),
            ("AGENT_LOG_FORMAT", "json"),
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot migrate the database: postgres is unavailable"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        !stderr.contains("hunter2") && !stdout.contains("hunter2"),
        "the password leaked"
    );
}

/// Starts the binary on a free port and returns it once it logs that it listens.
fn start_server(
    database: &str,
) -> (
    std::process::Child,
    u16,
    std::thread::JoinHandle<Vec<String>>,
) {
    let mut child = Command::new(BINARY)
        .env_clear()
        .envs([
            ("PORT", "0"),
            ("DATABASE_URL", database),
            ("AGENT_LOG_FORMAT", "json"),
            ("AGENT_SERVER__SHUTDOWN_DELAY", "0s"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let port = loop {
        let line = lines
            .next()
            .expect("the server exited before listening")
            .unwrap();
        let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
        seen.push(
            entry["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
        if entry["fields"]["message"] == "listening" {
            break entry["fields"]["port"].as_u64().unwrap() as u16;
        }
    };
    let rest = std::thread::spawn(move || {
        seen.extend(lines.map_while(Result::ok));
        seen
    });
    (child, port, rest)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_servers_starting_together_on_an_empty_database_migrate_once_and_both_become_ready() {
    let database = test_support::fresh_database_url().await;
    let (first, second) = {
        let (a, b) = (database.clone(), database.clone());
        let first = std::thread::spawn(move || start_server(&a));
        let second = std::thread::spawn(move || start_server(&b));
        (first.join().unwrap(), second.join().unwrap())
    };
    let mut logs = Vec::new();
    for (mut child, port, rest) in [first, second] {
        let ready = client()
            .get(format!("http://127.0.0.1:{port}/ready"))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), 200);
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(child.wait().unwrap().success());
        logs.push(rest.join().unwrap());
    }
    let applied = logs
        .iter()
        .filter(|log| log.iter().any(|line| line == "applied database migrations"))
        .count();
    let current = logs
        .iter()
        .filter(|log| {
            log.iter()
                .any(|line| line == "database schema is up to date")
        })
        .count();
    assert_eq!(
        (applied, current),
        (1, 1),
        "exactly one process ran the migrations: {logs:?}"
    );
}

/// Each worker has its own pools (connections stay on its thread), sized as its share of the
/// configured size: however requests spread over the workers, the process opens at most the
/// configured number of request connections (plus the small shared pool of the probes).
#[tokio::test(flavor = "multi_thread")]
async fn the_workers_together_stay_within_the_configured_pool_size() {
    let fake = fake_openai::FakeOpenAi::repeating(fake_openai::Scripted::text("ok")).await;
    let database = test_support::fresh_database_url().await;
    let redis = test_support::redis_url();
    let base_url = fake.base_url();
    let app = spawn(builder(&[
        ("DATABASE_URL", &database),
        ("REDIS_URL", &redis),
        ("OPENAI_BASE_URL", &base_url),
        ("WORKERS", "4"),
        ("AGENT_STORAGE__POOL_SIZE", "4"),
        ("AGENT_STORAGE__REDIS_POOL_SIZE", "4"),
    ]))
    .await;
    // Fresh connections, so the accepted sockets are spread over every worker.
    let requests: Vec<_> = (0..40)
        .map(|_| {
            let address = app.address.clone();
            tokio::spawn(async move {
                client()
                    .post(format!("{address}/agent"))
                    .json(&serde_json::json!({ "message": "hello" }))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap(), 200);
    }
    let (status, _) = app.get_json("/ready").await;
    assert_eq!(status, 200);
    let open = test_support::open_connections(&database).await;
    assert!(
        (2..=4 + 2).contains(&open),
        "{open} connections: at most 4 for requests (1 per worker) + 2 shared"
    );
}

/// In memory, the workers share one store: a session written through one worker is read back
/// through every other.
#[tokio::test(flavor = "multi_thread")]
async fn with_memory_storage_every_worker_sees_the_same_sessions() {
    let app = spawn(builder(&[("WORKERS", "4")])).await;
    let response = app
        .agent(serde_json::json!({ "message": "what is 2+3*4", "session_id": "shared-memory" }))
        .await;
    assert_eq!(response.status(), 200);
    for _ in 0..12 {
        // A new client each time: a new connection, accepted by the next worker in turn.
        let response = client()
            .get(format!("{}/sessions/shared-memory", app.address))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["messages"].as_array().map(Vec::len), Some(4), "{body}");
    }
}

/// The history cache sends every turn exactly the window the store holds (the last
/// `history_window` messages, without leading tool results), on one replica and across two:
/// whatever another replica did to the session since (a turn, a deletion) is seen at once, and the
/// cache is used when nothing happened in between, as `agent_session_history_total` counts.
#[tokio::test(flavor = "multi_thread")]
async fn the_history_cache_sends_what_the_store_holds_across_replicas() {
    use fake_openai::{FakeOpenAi, Scripted};
    use serde_json::{Value, json};
    // (replica, the turn calls the calculator first); None deletes the session on replica 1.
    let plan = [
        Some((0, true)),
        Some((0, false)),
        Some((0, true)),
        Some((1, false)),
        Some((0, true)),
        Some((0, false)),
        None,
        Some((0, false)),
        Some((0, true)),
    ];
    let script = plan
        .iter()
        .flatten()
        .enumerate()
        .flat_map(|(n, (_, tool))| {
            let call = Scripted::tool_call("calculator", json!({ "expression": format!("{n}+1") }));
            tool.then_some(call)
                .into_iter()
                .chain([Scripted::text(&format!("answer {n}"))])
        })
        .collect();
    let fake = FakeOpenAi::start(script).await;
    let replicas =
        crate::helpers::spawn_replicas(&fake, &[("AGENT_TURN__HISTORY_WINDOW", "3")], 2).await;
    let session = "cached-session";
    let as_sent = |message: &Value| {
        let text = |field: &str| message[field].as_str().unwrap_or_default().to_owned();
        (text("role"), text("content"), text("tool_call_id"))
    };
    for (n, step) in plan.iter().enumerate() {
        let Some((replica, _)) = *step else {
            let deleted = replicas[1]
                .client
                .delete(format!("{}/sessions/{session}", replicas[1].address))
                .send()
                .await
                .unwrap();
            assert_eq!(deleted.status(), 204, "step {n}");
            continue;
        };
        let stored = replicas[0].stored(session).await;
        let window = &stored[stored.len().saturating_sub(3)..];
        let first_kept = window
            .iter()
            .position(|stored| stored.message.role != agent_core::Role::Tool)
            .unwrap_or(window.len());
        let expected: Vec<_> = window[first_kept..]
            .iter()
            .map(|stored| {
                let message = &stored.message;
                (
                    message.role.as_str().to_owned(),
                    message.content.clone(),
                    message.tool_call_id.clone().unwrap_or_default(),
                )
            })
            .collect();
        let sent_before = fake.requests().await.len();
        let answer = replicas[replica]
            .agent(json!({ "message": format!("turn {n}"), "session_id": session }))
            .await;
        assert_eq!(answer.status(), 200, "step {n}");
        let request = &fake.requests().await[sent_before];
        let messages = request["messages"].as_array().unwrap();
        // The system prompt first, the new message last, the history in between.
        let history: Vec<_> = messages[1..messages.len() - 1]
            .iter()
            .map(as_sent)
            .collect();
        assert_eq!(history, expected, "step {n} on replica {replica}");
    }
    let counted = |text: &str, source: &str| -> u64 {
        let series = format!("agent_session_history_total{{source=\"{source}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(series.as_str()))
            .unwrap_or_else(|| panic!("no {series} in {text}"))
            .parse()
            .unwrap()
    };
    let (first, second) = (replicas[0].metrics().await, replicas[1].metrics().await);
    // Replica 0 read its first turn, the one after replica 1's turn and the one after the
    // deletion; the rest came from its cache.
    assert_eq!((counted(&first, "cache"), counted(&first, "store")), (4, 3));
    assert_eq!(
        (counted(&second, "cache"), counted(&second, "store")),
        (0, 1)
    );
}
