//! The long-stream rows of `cargo xtask bench` (issue 20): 8,000 streams held open at once by one
//! instance on Postgres and Redis, each a first turn whose model streams a chunk every 500 ms for
//! 10 s, opened gradually over 10 s by the load generator (`dev_harness::load`, which reads each
//! body frame by frame). Reported: streams completed and not, time to the response head (p99),
//! the most connections open, and the server's memory idle, at its peak (and per open stream),
//! and 30 s after the load ended.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dev_harness::Spawned;
use dev_harness::load::{Load, Plan, Request, RequestFn};

use crate::checks::harness::{
    http_get, mib, peak_rss_kib, rss_kib, server_command, wait_until_ok, with_descriptor_limit,
};

/// Streams held at once: a stream holds a client and an upstream connection, and a process here
/// may hold at most 20,000 descriptors.
pub(crate) const STREAMS: usize = 8_000;
/// The server's descriptor limit (hard and soft).
const DESCRIPTORS: u64 = 20_000;
/// The server's limits: the streams, and some room (a client opens its next stream while the
/// server is still closing the last one's turn).
const MAX_TURNS: usize = STREAMS + 200;
const MAX_CONNECTIONS: usize = STREAMS + 500;
/// What the model is asked: a chunk every 500 ms, twenty of them (10 s).
const PACE: &str = "pace 500 20";
/// Clients open over this long.
const RAMP: Duration = Duration::from_secs(10);
/// How long the load runs: the ramp and one whole stream after it.
const LOAD: Duration = Duration::from_secs(22);

/// One row: a streaming route under [`STREAMS`] streams.
#[derive(Debug)]
pub(crate) struct StreamsRow {
    pub(crate) scenario: String,
    /// Turns completed (stored), by the server's count.
    pub(crate) completed: u64,
    /// Turns that ended otherwise (failed, cancelled, dropped), by the server's count.
    pub(crate) not_completed: u64,
    /// Answers other than 200, and requests without a complete answer, by the clients' count.
    pub(crate) errors: u64,
    /// Turns by outcome, by the server's count.
    pub(crate) outcomes: BTreeMap<String, u64>,
    /// The clients' answers by status, and their requests without a complete answer.
    pub(crate) statuses: BTreeMap<u16, u64>,
    pub(crate) failures: u64,
    pub(crate) head_p99_ms: f64,
    pub(crate) most_open: usize,
    pub(crate) idle_rss_mib: f64,
    pub(crate) peak_rss_mib: f64,
    pub(crate) after_rss_mib: f64,
}

impl StreamsRow {
    /// The memory each open connection took at the peak, above idle.
    pub(crate) fn per_stream_kib(&self) -> f64 {
        (self.peak_rss_mib - self.idle_rss_mib) * 1024.0 / self.most_open.max(1) as f64
    }
}

/// Both streaming routes, `/agent/stream` and the OpenAI-compatible one, each on a fresh server of
/// the build in `bin`; `label` starts their scenarios' names.
pub(crate) fn rows(
    label: &str,
    bin: &Path,
    storage: &[(&str, String)],
    model_port: u16,
) -> anyhow::Result<Vec<StreamsRow>> {
    let agent: Arc<RequestFn> = Arc::new(|n| {
        Request::post_json(
            "/agent/stream",
            format!(r#"{{"message":"{PACE} stream {n}"}}"#),
        )
    });
    let openai: Arc<RequestFn> = Arc::new(|n| {
        Request::post_json(
            "/v1/chat/completions",
            format!(
                r#"{{"model":"agent","stream":true,"messages":[{{"role":"user","content":"{PACE} stream {n}"}}]}}"#
            ),
        )
    });
    Ok(vec![
        row(
            &format!(
                "{label}POST /agent/stream @{STREAMS}, a chunk every 500 ms for 10 s, Postgres + Redis"
            ),
            bin,
            storage,
            model_port,
            agent,
        )?,
        row(
            &format!(
                "{label}POST /v1/chat/completions stream @{STREAMS}, a chunk every 500 ms for 10 s, Postgres + Redis"
            ),
            bin,
            storage,
            model_port,
            openai,
        )?,
    ])
}

fn row(
    scenario: &str,
    bin: &Path,
    storage: &[(&str, String)],
    model_port: u16,
    request: Arc<RequestFn>,
) -> anyhow::Result<StreamsRow> {
    println!("xtask: {scenario}: {STREAMS} clients over {RAMP:?}, {LOAD:?} in all");
    let port = dev_harness::free_port()?;
    let mut command = server_command(bin, port, model_port);
    // The auto-sized limits keep connections at twice the turns (clients that keep idle
    // connections); streams are a connection each with its turn, so both are set.
    command
        .env("AGENT_RATE_LIMIT__REQUESTS", "0")
        .env("AGENT_STORAGE__POOL_SIZE", "32")
        .env("AGENT_SERVER__MAX_CONNECTIONS", MAX_CONNECTIONS.to_string())
        .env("AGENT_SERVER__MAX_TURNS_IN_FLIGHT", MAX_TURNS.to_string());
    for (name, value) in storage {
        command.env(name, value);
    }
    let logs = crate::project_root().join("target/bench");
    std::fs::create_dir_all(&logs)?;
    let log = logs.join(format!("streams-{port}.log"));
    let server = Spawned::start_logging(&mut with_descriptor_limit(&command, DESCRIPTORS), &log)?;
    println!("xtask: its log: {}", log.display());
    wait_until_ok(port, "/ready")?;
    let pid = server.id();
    let idle_rss_mib = mib(rss_kib(pid)?);
    let plan = Plan {
        clients: STREAMS,
        ramp: RAMP,
        timeout: Duration::from_secs(60),
        threads: 1,
    };
    let load = Load::start(port, plan, request)?;
    load.begin_measuring();
    std::thread::sleep(LOAD);
    let report = load.report()?;
    let ended = Instant::now();
    let peak_rss_mib = mib(peak_rss_kib(pid)?);
    let turns = turn_outcomes(port)?;
    std::thread::sleep(Duration::from_secs(30).saturating_sub(ended.elapsed()));
    let after_rss_mib = mib(rss_kib(pid)?);
    drop(server);
    let completed = turns.get("completed").copied().unwrap_or(0);
    Ok(StreamsRow {
        scenario: scenario.to_owned(),
        completed,
        not_completed: turns.values().sum::<u64>() - completed,
        errors: report.errors,
        statuses: report.statuses.clone(),
        outcomes: turns.clone(),
        failures: report.failures,
        head_p99_ms: report.first_byte_p99_ms,
        most_open: report.most_open,
        idle_rss_mib,
        peak_rss_mib,
        after_rss_mib,
    })
}

/// `agent_turns_total` by outcome, from the server's `/metrics`.
fn turn_outcomes(port: u16) -> anyhow::Result<BTreeMap<String, u64>> {
    let (_, text) = http_get(port, "/metrics")?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("agent_turns_total{")?;
            let outcome = rest.split("outcome=\"").nth(1)?.split('"').next()?;
            let count = line.rsplit(' ').next()?.parse::<f64>().ok()?;
            Some((outcome.to_owned(), count as u64))
        })
        .collect())
}

/// The rows as a Markdown table.
pub(crate) fn print(rows: &[StreamsRow]) {
    if rows.is_empty() {
        return;
    }
    println!(
        "\n| scenario | turns completed | not completed | client errors | head p99 ms | most open | idle RSS MiB | peak RSS MiB | KiB per open stream | RSS 30 s after MiB |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for row in rows {
        println!(
            "| {} | {} | {} | {} | {:.1} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            row.scenario,
            row.completed,
            row.not_completed,
            row.errors,
            row.head_p99_ms,
            row.most_open,
            row.idle_rss_mib,
            row.peak_rss_mib,
            row.per_stream_kib(),
            row.after_rss_mib
        );
    }
    for row in rows {
        println!(
            "{}: answers by status {:?}, {} without a complete answer; turns by outcome {:?}",
            row.scenario, row.statuses, row.failures, row.outcomes
        );
    }
}
