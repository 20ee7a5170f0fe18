//! Measuring one scenario: the server (agent-server or the bare baseline) started, the load
//! run (wrk for `GET /health`, the harness's load generator for the rest) after a warm-up, and
//! the server's (and optionally Postgres's and Redis's) CPU read around the measured window.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use dev_harness::Spawned;
use dev_harness::load::{Load, Plan, Report, RequestFn};

use super::{Measurement, WARM_UP};
use crate::checks::harness::{
    StackProcesses, clock_ticks_per_second, cpu_ticks, http_get, peak_rss_kib, server_command,
    wait_until_ok,
};

pub(super) fn run_bare(bin: &Path, duration: Duration, round: u32) -> anyhow::Result<Measurement> {
    let port = dev_harness::free_port()?;
    let server = Spawned::start(Command::new(bin.join("bare-health")).args([
        "--port",
        &port.to_string(),
        "--workers",
        "2",
    ]))?;
    wait_until_ok(port, "/health")?;
    let scenario = Scenario::get(
        format!("GET /health @64, bare actix-web (round {round})"),
        duration,
    );
    measure(&scenario, &server, port)
}

/// One measured scenario.
pub(super) struct Scenario<'a> {
    pub(super) name: String,
    /// The requests, made by [`Load`]; `None`: `GET /health` with wrk.
    pub(super) post: Option<Arc<RequestFn>>,
    pub(super) connections: u32,
    /// The measured window (after the warm-up).
    pub(super) duration: Duration,
    /// The fake model's port, whose most requests in flight are read.
    pub(super) stats_port: Option<u16>,
    /// Postgres's and Redis's processes, whose CPU is read too.
    pub(super) stack: Option<&'a StackProcesses>,
}

impl Scenario<'_> {
    /// `GET /health` by 64 connections.
    pub(super) fn get(name: String, duration: Duration) -> Self {
        Self {
            name,
            post: None,
            connections: 64,
            duration,
            stats_port: None,
            stack: None,
        }
    }

    /// The requests `post` makes, by `connections` clients.
    pub(super) fn post(
        name: String,
        post: Arc<RequestFn>,
        connections: u32,
        duration: Duration,
    ) -> Self {
        Self {
            post: Some(post),
            connections,
            ..Self::get(name, duration)
        }
    }
}

/// Starts agent-server with `extra` settings on the model at `model_port`, and measures it.
pub(super) fn run_agent(
    bin: &Path,
    extra: &[(&str, String)],
    model_port: u16,
    scenario: &Scenario<'_>,
) -> anyhow::Result<Measurement> {
    let port = dev_harness::free_port()?;
    let mut command = server_command(bin, port, model_port);
    command.env("AGENT_STORAGE__POOL_SIZE", "32");
    for (name, value) in extra {
        command.env(name, value);
    }
    let server = Spawned::start(&mut command)?;
    wait_until_ok(port, "/ready")?;
    measure(scenario, &server, port)
}

/// Measures one scenario: `GET /health` with wrk, or the requests `post` makes with [`Load`].
/// Either way a warm-up runs first (connections and pools open), and the server's CPU is read
/// around the measured window only.
fn measure(scenario: &Scenario<'_>, server: &Spawned, port: u16) -> anyhow::Result<Measurement> {
    let post = scenario.post.clone();
    let Scenario {
        connections,
        duration,
        stats_port,
        stack,
        ..
    } = *scenario;
    let scenario = scenario.name.as_str();
    println!(
        "xtask: {scenario}: {} s warm-up, then {} s measured",
        WARM_UP.as_secs(),
        duration.as_secs()
    );
    let (report, cpu_ticks_used, stack_ticks_used) = match post {
        None => {
            let (report, ticks) = measure_get(server, port, "/health", connections, duration)?;
            (report, ticks, None)
        }
        Some(requests) => {
            // Two threads: one left the generator short of CPU at 15 000 turns a second.
            let plan = Plan {
                threads: 2,
                ..Plan::clients(connections as usize)
            };
            let load = Load::start(port, plan, requests)?;
            let (mut before, mut after) = (0, 0);
            let (mut stack_before, mut stack_after) = (0, 0);
            let report = load.measure(
                WARM_UP,
                duration,
                || {
                    if let Some(port) = stats_port {
                        dev_harness::http::call(
                            port,
                            "DELETE",
                            "/stats",
                            &[],
                            None,
                            Duration::from_secs(5),
                        )?;
                    }
                    before = cpu_ticks(server.id())?;
                    if let Some(stack) = stack {
                        stack_before = stack.ticks()?;
                    }
                    Ok(())
                },
                || {
                    after = cpu_ticks(server.id())?;
                    if let Some(stack) = stack {
                        stack_after = stack.ticks()?;
                    }
                    Ok(())
                },
            )?;
            let stack_used = stack.map(|_| stack_after.saturating_sub(stack_before));
            (report, after - before, stack_used)
        }
    };
    let per_request = |ticks: u64| {
        ticks as f64 * 1000.0 / clock_ticks_per_second() / report.requests.max(1) as f64
    };
    let model_in_flight = match stats_port {
        Some(port) => Some(fake_max_in_flight(port)?),
        None => None,
    };
    Ok(Measurement {
        scenario: scenario.to_owned(),
        requests: report.requests,
        per_second: report.per_second,
        p50_ms: report.p50_ms,
        p99_ms: report.p99_ms,
        errors: report.errors,
        cpu_ms_per_request: per_request(cpu_ticks_used),
        stack_cpu_ms_per_request: stack_ticks_used.map(per_request),
        peak_rss_mib: peak_rss_kib(server.id())? as f64 / 1024.0,
        model_in_flight,
    })
}

/// `GET path` with wrk: a warm-up run, then the measured run; answers its report and the
/// server's CPU ticks during it. wrk only here, and why: /health runs at 130 000 requests a second
/// on two cores shared with the server, where the load generator's own CPU sets the pace, and
/// wrk's C event loop is the cheapest driver we have; the figure that matters is the ratio to the
/// bare baseline, measured with the same driver. Every other load is `dev_harness::load`.
fn measure_get(
    server: &Spawned,
    port: u16,
    path: &str,
    connections: u32,
    duration: Duration,
) -> anyhow::Result<(Report, u64)> {
    let url = format!("http://127.0.0.1:{port}{path}");
    let wrk = |seconds: u64| {
        Command::new("wrk")
            .args([
                "-t1",
                &format!("-c{connections}"),
                &format!("-d{seconds}s"),
                "--latency",
                "--timeout",
                "5s",
                &url,
            ])
            .output()
            .context("wrk failed to run")
    };
    wrk(WARM_UP.as_secs())?;
    let cpu_before = cpu_ticks(server.id())?;
    let output = wrk(duration.as_secs())?;
    let cpu_after = cpu_ticks(server.id())?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let report = parse_wrk(&text).with_context(|| format!("cannot read wrk's output:\n{text}"))?;
    Ok((report, cpu_after - cpu_before))
}

pub(super) fn parse_wrk(text: &str) -> Option<Report> {
    let millis = |value: &str| -> Option<f64> {
        let value = value.trim();
        let (number, scale) = if let Some(number) = value.strip_suffix("us") {
            (number, 0.001)
        } else if let Some(number) = value.strip_suffix("ms") {
            (number, 1.0)
        } else if let Some(number) = value.strip_suffix('s') {
            (number, 1000.0)
        } else {
            (value, 1.0)
        };
        number.parse::<f64>().ok().map(|number| number * scale)
    };
    let percentile = |label: &str| {
        text.lines()
            .find_map(|line| line.trim().strip_prefix(label).and_then(&millis))
    };
    let requests = text.lines().find_map(|line| {
        let line = line.trim();
        line.contains(" requests in ")
            .then(|| line.split_whitespace().next()?.parse().ok())
            .flatten()
    })?;
    let per_second = text.lines().find_map(|line| {
        line.trim()
            .strip_prefix("Requests/sec:")?
            .trim()
            .parse()
            .ok()
    })?;
    let non_2xx: u64 = text
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("Non-2xx or 3xx responses:")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0);
    let socket_errors: u64 = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("Socket errors:"))
        .map(|rest| {
            rest.split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Some(Report {
        requests,
        per_second,
        p50_ms: percentile("50%")?,
        p99_ms: percentile("99%")?,
        errors: non_2xx + socket_errors,
        ..Report::default()
    })
}

fn fake_max_in_flight(port: u16) -> anyhow::Result<u64> {
    let body = http_get(port, "/stats")?.1;
    let json = body
        .split("\"max_in_flight\":")
        .nth(1)
        .context("no max_in_flight in /stats")?;
    Ok(json
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()?)
}
