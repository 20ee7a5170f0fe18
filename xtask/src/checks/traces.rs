//! `cargo xtask traces`: the release server exporting traces over OTLP/HTTP to a receiver built on
//! the protocol's published protobuf definitions (`otlp-receiver`, test-support), end to end: a
//! turn with a tool call arrives as one trace under the caller's `traceparent`, with the GenAI
//! attributes, the configured resource and headers; the spans of the last request are flushed
//! at SIGTERM; with the receiver gone, requests still succeed and the dropped spans are counted.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use xshell::Shell;

use dev_harness::Spawned;

use crate::checks::harness::{build_release, fake_model, http_get, server_command, wait_until_ok};

/// The export header the check configures, and must see at the receiver.
const TOKEN: &str = "otlp-secret-token";

pub(crate) fn run(shell: &Shell) -> anyhow::Result<()> {
    let bin = build_release(shell)?;
    let (_model, model_port) = fake_model(&bin, 0)?;
    let receiver_port = dev_harness::free_port()?;
    let receiver = start_receiver(&bin, receiver_port, true)?;
    let log = std::env::temp_dir().join(format!("agent-traces-{}.log", std::process::id()));
    let start = || -> anyhow::Result<(Spawned, u16)> {
        let port = dev_harness::free_port()?;
        let server = Spawned::start_logging(
            server_command(&bin, port, model_port)
                .env(
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    format!("http://127.0.0.1:{receiver_port}"),
                )
                .env(
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    format!("x-otlp-token={TOKEN}"),
                )
                .env("OTEL_SERVICE_NAME", "agent-check")
                .env("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=ci")
                .env("AGENT_TELEMETRY__OTLP_TIMEOUT", "2s"),
            &log,
        )?;
        wait_until_ok(port, "/ready")?;
        Ok((server, port))
    };

    println!("xtask: a turn with a tool call, exported as one trace");
    let (server, port) = start()?;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    turn(port, &format!("00-{trace_id}-{parent}-01"))?;
    let spans = wait_for_spans(receiver_port, trace_id, 6)?;
    check_turn_trace(&spans, parent)?;
    let exports = receive(receiver_port)?["exports"].clone();
    ensure!(
        exports.as_array().is_some_and(|exports| exports
            .iter()
            .all(|headers| headers["x-otlp-token"] == TOKEN)),
        "the export requests lack the configured header: {exports}"
    );

    // The request's log lines carry its trace id.
    let logged = std::fs::read_to_string(&log).context("reading the server's log")?;
    let completion = logged
        .lines()
        .find(|line| line.contains("request completed") && line.contains(trace_id))
        .with_context(|| format!("no completion line with trace id {trace_id} in:\n{logged}"))?;
    ensure!(completion.contains("\"trace_id\""), "{completion}");

    println!("xtask: the spans of the last request are flushed at SIGTERM");
    let last = "0af7651916cd43dd8448eb211c80319c";
    turn(port, &format!("00-{last}-{parent}-01"))?;
    // Well within the batch processor's 5 s delay: only the shutdown's flush can send them.
    drop(server);
    let flushed = spans_of(&receive(receiver_port)?, last);
    ensure!(
        flushed.len() >= 6,
        "after SIGTERM the receiver had {} spans of the last request",
        flushed.len()
    );

    println!("xtask: with the collector gone, requests succeed and dropped spans are counted");
    let (_server, port) = start()?;
    drop(receiver);
    for attempt in 0..20 {
        let trace = format!("00-{:032x}-{parent}-01", attempt + 1);
        turn(port, &trace)?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, metrics) = http_get(port, "/metrics")?;
        let dropped = metric(
            &metrics,
            "agent_trace_spans_dropped_total{reason=\"export_failed\"}",
        );
        if dropped >= 20.0 {
            println!("xtask: {dropped} spans dropped, counted in agent_trace_spans_dropped_total");
            break;
        }
        if Instant::now() > deadline {
            bail!("with the collector gone, the dropped spans were not counted:\n{metrics}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = std::fs::remove_file(&log);
    println!("xtask: traces OK");
    Ok(())
}

/// The OTLP receiver on `port`, keeping what it receives (or, for benchmarks, only counting).
pub(crate) fn start_receiver(bin: &Path, port: u16, keep: bool) -> anyhow::Result<Spawned> {
    let mut command = Command::new(bin.join("otlp-receiver"));
    command.args(["--port", &port.to_string()]);
    if !keep {
        command.arg("--count-only");
    }
    let receiver = Spawned::start(&mut command)?;
    wait_until_ok(port, "/spans")?;
    Ok(receiver)
}

/// A turn whose model calls the calculator, under `traceparent`.
fn turn(port: u16, traceparent: &str) -> anyhow::Result<()> {
    let (status, body) = dev_harness::http::call(
        port,
        "POST",
        "/agent",
        &[("traceparent", traceparent)],
        Some(r#"{"message":"tool calculator {\"expression\":\"2+3*4\"}","session_id":"traced"}"#),
        Duration::from_secs(10),
    )?;
    ensure!(status == 200, "POST /agent answered {status}: {body}");
    Ok(())
}

fn receive(port: u16) -> anyhow::Result<Value> {
    let (status, body) = http_get(port, "/spans")?;
    ensure!(status == 200, "the receiver answered {status}");
    serde_json::from_str(&body).context("the receiver's answer is not JSON")
}

fn spans_of(received: &Value, trace_id: &str) -> Vec<Value> {
    received["spans"]
        .as_array()
        .map(|spans| {
            spans
                .iter()
                .filter(|span| span["trace_id"] == trace_id)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

fn wait_for_spans(port: u16, trace_id: &str, at_least: usize) -> anyhow::Result<Vec<Value>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let spans = spans_of(&receive(port)?, trace_id);
        if spans.len() >= at_least {
            // The batch may still be arriving: one more look after a pause.
            std::thread::sleep(Duration::from_millis(500));
            return Ok(spans_of(&receive(port)?, trace_id));
        }
        if Instant::now() > deadline {
            bail!(
                "the receiver has {} spans of trace {trace_id}: {spans:#?}",
                spans.len()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The tree of one turn with a tool call: the server span under the caller's, the turn under it,
/// two model calls and the tool call under the turn, with their conventional attributes.
fn check_turn_trace(spans: &[Value], remote_parent: &str) -> anyhow::Result<()> {
    let named =
        |name: &str| -> Vec<&Value> { spans.iter().filter(|span| span["name"] == name).collect() };
    let one = |name: &str| -> anyhow::Result<&Value> {
        let found = named(name);
        ensure!(found.len() == 1, "one span {name} expected in {spans:#?}");
        Ok(found[0])
    };
    let server = one("POST /agent")?;
    ensure!(server["parent_span_id"] == remote_parent, "{server:#}");
    // SPAN_KIND_SERVER = 2, SPAN_KIND_CLIENT = 3.
    ensure!(server["kind"] == 2, "{server:#}");
    ensure!(server["attributes"]["http.route"] == "/agent", "{server:#}");
    ensure!(
        server["attributes"]["http.response.status_code"] == 200,
        "{server:#}"
    );
    ensure!(
        server["resource"]["service.name"] == "agent-check",
        "{server:#}"
    );
    ensure!(
        server["resource"]["deployment.environment.name"] == "ci",
        "{server:#}"
    );
    // Named after the agent (without [[agents]], the one agent `agent`).
    let turn = one("invoke_agent agent")?;
    ensure!(turn["parent_span_id"] == server["span_id"], "{turn:#}");
    ensure!(turn["attributes"]["gen_ai.agent.id"] == "agent", "{turn:#}");
    ensure!(
        turn["attributes"]["gen_ai.response.model"] == "gpt-4o-mini",
        "{turn:#}"
    );
    let chats = named("chat gpt-4o-mini");
    ensure!(chats.len() == 2, "two model calls expected in {spans:#?}");
    for chat in &chats {
        ensure!(chat["parent_span_id"] == turn["span_id"], "{chat:#}");
        ensure!(chat["kind"] == 3, "{chat:#}");
        let attributes = &chat["attributes"];
        ensure!(attributes["gen_ai.operation.name"] == "chat", "{chat:#}");
        ensure!(attributes["gen_ai.provider.name"] == "openai", "{chat:#}");
        ensure!(attributes["gen_ai.usage.input_tokens"].is_i64(), "{chat:#}");
        ensure!(
            attributes["gen_ai.usage.output_tokens"].is_i64(),
            "{chat:#}"
        );
        ensure!(
            attributes["gen_ai.response.finish_reasons"].is_array(),
            "{chat:#}"
        );
        ensure!(
            attributes.get("gen_ai.input.messages").is_none(),
            "{chat:#}"
        );
    }
    let tool = one("execute_tool calculator")?;
    ensure!(tool["parent_span_id"] == turn["span_id"], "{tool:#}");
    ensure!(
        tool["attributes"]["gen_ai.tool.name"] == "calculator",
        "{tool:#}"
    );
    ensure!(
        tool["attributes"]["gen_ai.tool.call.id"].is_string(),
        "{tool:#}"
    );
    for step in ["session.lock", "session.history", "session.store"] {
        ensure!(one(step)?["parent_span_id"] == server["span_id"], "{step}");
    }
    Ok(())
}

/// A sample's value in Prometheus text (0 when absent).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}
