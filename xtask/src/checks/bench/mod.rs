//! Benchmarks. `cargo xtask bench-storage`: the storage criterion benchmarks against real
//! Postgres and Redis. `cargo xtask bench`: the HTTP benchmark — the release server (memory, then
//! Postgres + Redis), fake models on loopback (instant and 200 ms) and a bare actix-web baseline
//! built in the same run, driven on 127.0.0.1 for a bounded time each: `GET /health` by wrk,
//! `POST /agent` and `POST /v1/chat/completions` by `crate::load` on connections kept open from
//! the warm-up into the measured window; then 8,000 long streams (`crate::checks::streams`;
//! `--only streams` runs those alone; `--only TEXT` the other rows whose scenario contains TEXT).

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use xshell::{Shell, cmd};

use crate::checks::harness::{StackProcesses, baseline_build, build_release, fake_model};

use dev_harness::load::{Request, RequestFn};

mod measure;

use measure::{Scenario, run_agent, run_bare};

pub(crate) fn storage(shell: &Shell) -> anyhow::Result<()> {
    cmd!(
        shell,
        "cargo bench --package agent-storage --bench storage --no-run --locked"
    )
    .run()?;
    let services = dev_harness::Services::start_or_reuse()?;
    let _database = shell.push_env("DATABASE_URL", &services.database_url);
    let _redis = shell.push_env("REDIS_URL", &services.redis_url);
    cmd!(
        shell,
        "cargo bench --package agent-storage --bench storage --locked"
    )
    .run()?;
    Ok(())
}

/// Load before each measured run, not counted: it opens the connections a steady state has.
const WARM_UP: Duration = Duration::from_secs(2);

/// One row of the report.
#[derive(Debug)]
struct Measurement {
    scenario: String,
    requests: u64,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    cpu_ms_per_request: f64,
    /// CPU of the Postgres and Redis processes per request, for rows that use them.
    stack_cpu_ms_per_request: Option<f64>,
    peak_rss_mib: f64,
    model_in_flight: Option<u64>,
}

pub(crate) fn http(
    shell: &Shell,
    seconds: u64,
    only: Option<&str>,
    baseline: Option<&str>,
) -> anyhow::Result<()> {
    if Command::new("wrk").arg("--version").output().is_err() {
        bail!("wrk is not installed: apt-get install wrk");
    }
    let streams_only = only == Some("streams");
    // Any other text picks the rows whose scenario contains it (no streams).
    let wanted = |scenario: &str| only.is_none_or(|text| scenario.contains(text));
    // The streams rows hold 8,000 connections here and in the fake model (started below).
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let bin = build_release(shell)?;
    // Each server row runs for every build, the baseline's first: one run compares them.
    let mut builds = Vec::new();
    if let Some(spec) = baseline {
        builds.push((BASELINE, baseline_build(shell, spec)?));
    }
    builds.push(("", bin.clone()));
    let services = dev_harness::Services::start_or_reuse()?;
    let stack = StackProcesses::find(&services.database_url, &services.redis_url)?;
    let (_instant, instant_port) = fake_model(&bin, 0)?;
    let (_slow, slow_port) = fake_model(&bin, 200)?;
    let durable = vec![
        ("DATABASE_URL", services.database_url.clone()),
        ("REDIS_URL", services.redis_url.clone()),
    ];
    // The long streams of every build, each from a settled database.
    let stream_rows = || -> anyhow::Result<Vec<crate::checks::streams::StreamsRow>> {
        let mut streams = Vec::new();
        for (label, dir) in &builds {
            settle(&services.database_url)?;
            streams.extend(crate::checks::streams::rows(
                label,
                dir,
                &durable,
                instant_port,
            )?);
        }
        Ok(streams)
    };
    if streams_only {
        crate::checks::streams::print(&stream_rows()?);
        return Ok(());
    }

    let first_turn: Arc<RequestFn> = Arc::new(|_| {
        Request::post_json("/agent", r#"{"message":"what is the answer?"}"#.to_owned())
    });
    // The same first turn through the OpenAI-compatible API, stateless: the same model call, in
    // OpenAI's shapes (nothing stored; Postgres counts its usage).
    let openai_turn: Arc<RequestFn> = Arc::new(|_| {
        Request::post_json(
            "/v1/chat/completions",
            r#"{"model":"agent","messages":[{"role":"user","content":"what is the answer?"}]}"#
                .to_owned(),
        )
    });
    // Every request continues one of 4096 sessions in turn, so the 64 in flight never share one
    // (no lock waits) and each turn takes the lock and reads a growing history.
    // Each scenario of continuing turns has sessions of its own for each build (the script is
    // made per build, by its index), so each starts from empty ones.
    let run_id = std::process::id();
    let continuing_in = |scenario: &'static str| -> Script {
        Arc::new(move |build| {
            Arc::new(move |n| {
                Request::post_json(
                    "/agent",
                    format!(
                        r#"{{"message":"what is the answer?","session_id":"bench-{run_id}-{build}-{scenario}-{}"}}"#,
                        n % 4096
                    ),
                )
            })
        })
    };
    let continuing = continuing_in("plain");
    let continuing_tenancy = continuing_in("tenancy");
    let continuing_counted = continuing_in("counted");
    // Issue 20's realistic row: continuing sessions with messages of about 2 KB, a history
    // window of 20, and one tool call per turn (the fake model calls the calculator, whose
    // arguments are padded to 2 KB with JSON whitespace; then answers with the 2 KB message).
    // Each row its own sessions: a row with a context budget continuing the sessions of one
    // without would count their uncounted histories on every turn.
    let realistic_in = |scenario: &'static str| -> Script {
        Arc::new(move |build| {
            Arc::new(move |n| {
                let padding = " ".repeat(2000);
                let message = format!(r#"tool calculator {{\"expression\": \"2+3*4\"{padding}}}"#);
                Request::post_json(
                    "/agent",
                    format!(
                        r#"{{"message":"{message}","session_id":"bench-{run_id}-{build}-{scenario}-{}"}}"#,
                        n % 4096
                    ),
                )
            })
        })
    };
    let realistic = realistic_in("realistic");
    let realistic_budgeted = realistic_in("realistic-budgeted");
    let realistic_compacted = realistic_in("realistic-compacted");
    let same = |script: &Arc<RequestFn>| -> Script {
        let script = Arc::clone(script);
        Arc::new(move |_| Arc::clone(&script))
    };
    let (first_turn_script, openai_script) = (same(&first_turn), same(&openai_turn));
    let duration = Duration::from_secs(seconds);
    let memory: Vec<(&str, String)> = Vec::new();
    // The same, with every caller's turns checked against a daily token quota (one read of the
    // day's usage per turn) and the metrics split by caller: the cost of tenancy's options.
    let mut realistic_settings = durable.clone();
    realistic_settings.push(("AGENT_TURN__HISTORY_WINDOW", "20".to_owned()));
    // Issue 36: the realistic row over a context budget (its turns take about 110 tokens; two
    // or three fit beside the system prompt and tools): counted and truncated every turn; and
    // compacted instead, a summary call whenever it outgrows it.
    let mut budgeted = realistic_settings.clone();
    budgeted.push(("AGENT_CONTEXT__MAX_INPUT_TOKENS", "400".to_owned()));
    let mut compacted = budgeted.clone();
    compacted.push(("AGENT_CONTEXT__STRATEGY", "compact".to_owned()));
    compacted.push(("AGENT_CONTEXT__KEEP_RECENT_TURNS", "1".to_owned()));
    // Issue 36: continuing sessions with a budget they never reach: every message counted once,
    // the history's counts read back with it, nothing left out.
    let mut counted = durable.clone();
    counted.push(("AGENT_CONTEXT__MAX_INPUT_TOKENS", "100000".to_owned()));
    let mut tenancy = durable.clone();
    tenancy.push(("AGENT_API__DAILY_TOKEN_QUOTA", "1000000000000".to_owned()));
    tenancy.push(("AGENT_API__METRICS_CALLER_LABELS", "true".to_owned()));
    // Traces exported to a receiver on loopback, every trace or one in ten; and to a collector
    // that is gone (the export fails, spans are dropped and counted).
    let receiver_port = dev_harness::free_port()?;
    let _receiver = crate::checks::traces::start_receiver(&bin, receiver_port, false)?;
    let traced = |sampler_arg: &str, port: u16| {
        let mut vars = durable.clone();
        vars.push((
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        ));
        vars.push(("OTEL_TRACES_SAMPLER", "traceidratio".to_owned()));
        vars.push(("OTEL_TRACES_SAMPLER_ARG", sampler_arg.to_owned()));
        vars
    };
    let traced_all = traced("1.0", receiver_port);
    let traced_tenth = traced("0.1", receiver_port);
    let traced_dead = traced("1.0", dev_harness::free_port()?);
    let mut rows = Vec::new();

    // /health: the bare baseline and the server alternately, five times each (rounds differ by a
    // few per cent on a shared machine; the ratio is of the means).
    for round in (1..=5).filter(|_| wanted("GET /health @64, agent-server")) {
        rows.push(run_bare(&bin, duration, round)?);
        for (label, dir) in &builds {
            let scenario = Scenario::get(
                format!("{label}GET /health @64, agent-server (round {round})"),
                duration,
            );
            rows.push(run_agent(dir, &memory, instant_port, &scenario)?);
        }
    }
    // The /agent scenarios: name, settings (memory, or Postgres + Redis), model port, body
    // script, connections, and whether to read the model's most calls in flight.
    let scenarios = [
        (
            "POST /agent @64, instant model, memory",
            &memory,
            instant_port,
            &first_turn_script,
            64,
            false,
        ),
        (
            "POST /v1/chat/completions @64, instant model, memory, stateless",
            &memory,
            instant_port,
            &openai_script,
            64,
            false,
        ),
        (
            "POST /v1/chat/completions @64, instant model, Postgres + Redis, stateless",
            &durable,
            instant_port,
            &openai_script,
            64,
            false,
        ),
        (
            "POST /agent @64, instant model, Postgres + Redis, continuing sessions",
            &durable,
            instant_port,
            &continuing,
            64,
            false,
        ),
        (
            "POST /agent @64, instant model, Postgres + Redis, continuing sessions, context budget 100000 tokens (counted, nothing left out)",
            &counted,
            instant_port,
            &continuing_counted,
            64,
            false,
        ),
        (
            "POST /agent @64, instant model, Postgres + Redis, continuing sessions, quota + caller labels",
            &tenancy,
            instant_port,
            &continuing_tenancy,
            64,
            false,
        ),
        (
            "POST /agent @64, instant model, Postgres + Redis, realistic: continuing sessions, 2 KB messages, history 20, a tool call per turn",
            &realistic_settings,
            instant_port,
            &realistic,
            64,
            false,
        ),
        (
            "POST /agent @64, instant model, Postgres + Redis, realistic, context budget 400 tokens (truncated)",
            &budgeted,
            instant_port,
            &realistic_budgeted,
            64,
            false,
        ),
        (
            "POST /agent @64, instant model, Postgres + Redis, realistic, context budget 400 tokens, compacted",
            &compacted,
            instant_port,
            &realistic_compacted,
            64,
            false,
        ),
        (
            "POST /agent @256, 200 ms model, Postgres + Redis, first turns",
            &durable,
            slow_port,
            &first_turn_script,
            256,
            true,
        ),
    ];
    // First turns on Postgres + Redis without traces and with one request in ten traced,
    // alternately three times each (rounds differ by several per cent on a shared machine; the
    // cost of traces is the ratio of the means), then every request traced, and the collector
    // gone.
    let first_turns = "POST /agent @64, instant model, Postgres + Redis, first turns";
    let mut traced_rows = Vec::new();
    for round in 1..=3 {
        traced_rows.push((format!("{first_turns} (round {round})"), &durable));
        traced_rows.push((
            format!("{first_turns}, traces 10 % (round {round})"),
            &traced_tenth,
        ));
    }
    traced_rows.push((format!("{first_turns}, traces 100 %"), &traced_all));
    traced_rows.push((
        format!("{first_turns}, traces, collector down"),
        &traced_dead,
    ));
    for (scenario, storage) in traced_rows {
        if !wanted(&scenario) {
            continue;
        }
        for (label, dir) in &builds {
            settle(&services.database_url)?;
            let scenario = Scenario {
                stack: Some(&stack),
                ..Scenario::post(
                    format!("{label}{scenario}"),
                    Arc::clone(&first_turn),
                    64,
                    duration,
                )
            };
            rows.push(run_agent(dir, storage, instant_port, &scenario)?);
        }
    }
    for (scenario, storage, model_port, script, connections, in_flight) in scenarios {
        if !wanted(scenario) {
            continue;
        }
        for (build, (label, dir)) in builds.iter().enumerate() {
            let stack = if storage.is_empty() {
                None
            } else {
                settle(&services.database_url)?;
                Some(&stack)
            };
            let scenario = Scenario {
                stats_port: in_flight.then_some(model_port),
                stack,
                ..Scenario::post(
                    format!("{label}{scenario}"),
                    script(build),
                    connections,
                    duration,
                )
            };
            rows.push(run_agent(dir, storage, model_port, &scenario)?);
        }
    }
    // Background runs (this build only: the baseline may not have them): 64 clients queue
    // runs as fast as they are answered (202); the replica takes them while it has turn slots.
    let background = "POST /agent @64, background runs, instant model, Postgres + Redis";
    let mut background_rates = None;
    if wanted(background) {
        settle(&services.database_url)?;
        let started = unix_seconds_now();
        let mut settings = durable.clone();
        settings.push(("AGENT_RUNS__MAX_QUEUED", "10000000".to_owned()));
        settings.push(("AGENT_RUNS__MAX_QUEUED_PER_CALLER", "10000000".to_owned()));
        let scenario = Scenario {
            stack: Some(&stack),
            ..Scenario::post(
                background.to_owned(),
                Arc::new(|_| {
                    Request::post_json(
                        "/agent",
                        r#"{"message":"what is the answer?","background":true}"#.to_owned(),
                    )
                }),
                64,
                duration,
            )
        };
        let row = run_agent(&bin, &settings, instant_port, &scenario)?;
        background_rates = Some((
            row.per_second,
            completed_per_second(&services.database_url, started)?,
        ));
        rows.push(row);
    }
    let streams = if only.is_none() {
        stream_rows()?
    } else {
        Vec::new()
    };
    drop(services);

    println!(
        "\n| scenario | requests | req/s | p50 ms | p99 ms | errors | server CPU ms/req | Postgres + Redis CPU ms/req | peak RSS MiB | model calls in flight (max) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for row in &rows {
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {} | {:.4} | {} | {:.1} | {} |",
            row.scenario,
            row.requests,
            row.per_second,
            row.p50_ms,
            row.p99_ms,
            row.errors,
            row.cpu_ms_per_request,
            row.stack_cpu_ms_per_request
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.4}")),
            row.peak_rss_mib,
            row.model_in_flight
                .map_or_else(|| "-".to_owned(), |count| count.to_string())
        );
    }
    let server_cpu = |row: &Measurement| Some(row.cpu_ms_per_request);
    let cpu = |prefix: &str| mean(&rows, |row| row.scenario.starts_with(prefix), server_cpu);
    crate::checks::streams::print(&streams);
    // Each summary needs its rows: `--only` may have left them out (a mean of none is 0).
    let ratio = cpu("GET /health @64, agent-server") / cpu("GET /health @64, bare");
    if ratio.is_finite() && ratio > 0.0 {
        println!(
            "\n/health server CPU per request vs the bare baseline (mean of rounds): {ratio:.2}x"
        );
    }
    let exactly = |names: &[String]| mean(&rows, |row| names.contains(&row.scenario), server_cpu);
    let rounds = |suffix: &str| -> Vec<String> {
        (1..=3)
            .map(|round| format!("{first_turns}{suffix} (round {round})"))
            .collect()
    };
    let untraced = exactly(&rounds(""));
    // Issue 20: a continuing turn (lock, history read) against the first turns of the same run,
    // by the server and by the whole stack (server + Postgres + Redis).
    let continuing_name = "POST /agent @64, instant model, Postgres + Redis, continuing sessions";
    let stack_of = |names: &[String]| {
        mean(
            &rows,
            |row| names.contains(&row.scenario),
            |row| row.stack_cpu_ms_per_request,
        )
    };
    let continuing_rows = [continuing_name.to_owned()];
    let measured = |ms: f64| ms > 0.0;
    if measured(untraced) && measured(exactly(&continuing_rows)) {
        println!(
            "continuing turn vs first turn, server CPU per request: {:.2}x ({:.4} vs {:.4} ms; target <= 1.2x); stack CPU (server + Postgres + Redis): {:.4} vs {:.4} ms",
            exactly(&continuing_rows) / untraced,
            exactly(&continuing_rows),
            untraced,
            exactly(&continuing_rows) + stack_of(&continuing_rows),
            untraced + stack_of(&rounds("")),
        );
    }
    for (sampling, names) in [
        ("100 %", vec![format!("{first_turns}, traces 100 %")]),
        ("10 %", rounds(", traces 10 %")),
    ] {
        if !measured(untraced) || !measured(exactly(&names)) {
            continue;
        }
        println!(
            "first-turn server CPU per request with traces at {sampling} vs without (means of the rounds): {:.2}x",
            exactly(&names) / untraced
        );
    }
    if let Some((accepted, (completed, per_second))) = background_rates {
        println!(
            "background runs at 64 clients: {accepted:.0} accepted/s (202), {per_second:.0} completed/s ({completed} completed while the load ran)"
        );
    }
    if baseline.is_some() {
        compare(&rows);
    }
    Ok(())
}

fn unix_seconds_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

/// The background runs completed since `since` (Unix seconds), and how many per second from the
/// first one's start to the last one's end; then the runs left queued are removed, so that no
/// later scenario's server takes them.
fn completed_per_second(database_url: &str, since: f64) -> anyhow::Result<(u64, f64)> {
    let query = format!(
        "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM max(finished_at) - min(started_at)), 0) \
         FROM runs WHERE background AND status = 'completed' AND created_at >= to_timestamp({since})"
    );
    let output = Command::new("psql")
        .args([
            database_url,
            "-X",
            "-q",
            "-t",
            "-A",
            "-F",
            " ",
            "-c",
            &query,
        ])
        .args([
            "-c",
            "DELETE FROM runs WHERE status IN ('queued', 'in_progress')",
        ])
        .output()
        .context("psql failed to run (apt-get install postgresql-client)")?;
    if !output.status.success() {
        bail!("psql: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut fields = text.split_whitespace();
    let count: u64 = fields.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let span: f64 = fields.next().and_then(|n| n.parse().ok()).unwrap_or(0.0);
    Ok((count, if span > 0.0 { count as f64 / span } else { 0.0 }))
}

/// A scenario's request script for the build of this index.
type Script = Arc<dyn Fn(usize) -> Arc<RequestFn>>;

/// The mean of `value` over the rows `which` picks (those that have a value).
fn mean(
    rows: &[Measurement],
    which: impl Fn(&Measurement) -> bool,
    value: impl Fn(&Measurement) -> Option<f64>,
) -> f64 {
    let values: Vec<f64> = rows
        .iter()
        .filter(|row| which(row))
        .filter_map(value)
        .collect();
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// The label of the baseline build's rows.
const BASELINE: &str = "baseline: ";

/// Each row of this build against the baseline's row of the same scenario, and the noise: how far
/// the rounds of one build differ from their mean (the /health and first-turn rounds).
fn compare(rows: &[Measurement]) {
    println!(
        "\n| scenario | CPU ms/req baseline → this | ratio | p99 ms baseline → this | peak RSS MiB baseline → this |"
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    for row in rows {
        let Some(base) = rows
            .iter()
            .find(|base| base.scenario == format!("{BASELINE}{}", row.scenario))
        else {
            continue;
        };
        println!(
            "| {} | {:.4} → {:.4} | {:.2}x | {:.2} → {:.2} | {:.1} → {:.1} |",
            row.scenario,
            base.cpu_ms_per_request,
            row.cpu_ms_per_request,
            row.cpu_ms_per_request / base.cpu_ms_per_request,
            base.p99_ms,
            row.p99_ms,
            base.peak_rss_mib,
            row.peak_rss_mib,
        );
    }
    let mut noise: f64 = 0.0;
    for label in [BASELINE, ""] {
        for family in [
            "GET /health @64, agent-server (round",
            "POST /agent @64, instant model, Postgres + Redis, first turns (round",
        ] {
            let prefix = format!("{label}{family}");
            let round = |row: &Measurement| row.scenario.starts_with(&prefix);
            let mean = mean(rows, round, |row| Some(row.cpu_ms_per_request));
            let values = rows.iter().filter(|row| round(row));
            for row in values {
                noise = noise.max((row.cpu_ms_per_request / mean - 1.0).abs());
            }
        }
    }
    println!(
        "noise: the rounds of one build differ from their mean by up to {:.0} % of CPU per request",
        noise * 100.0
    );
}

/// Vacuums, analyzes and checkpoints the database, so that the background work a scenario's
/// writes leave behind (autovacuum, checkpoint) is not measured in the next one.
fn settle(database_url: &str) -> anyhow::Result<()> {
    let output = Command::new("psql")
        .args([
            database_url,
            "-X",
            "-q",
            "-c",
            "VACUUM ANALYZE",
            "-c",
            "CHECKPOINT",
        ])
        .output()
        .context("psql failed to run (apt-get install postgresql-client)")?;
    if !output.status.success() {
        bail!("psql: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::measure::parse_wrk;

    const WRK: &str = "Running 8s test @ http://127.0.0.1:40000/health
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   452.01us    1.02ms  44.88ms   97.41%
    Req/Sec   130.12k     4.01k  137.43k    81.25%
  Latency Distribution
     50%  290.00us
     75%  370.00us
     90%  520.00us
     99%    4.21ms
  1035360 requests in 8.00s, 139.23MB read
  Socket errors: connect 0, read 2, write 1, timeout 0
  Non-2xx or 3xx responses: 5
Requests/sec: 129408.52
Transfer/sec:     17.40MB
";

    #[test]
    fn wrk_output_gives_requests_rate_percentiles_and_errors() {
        let report = parse_wrk(WRK).unwrap();
        assert_eq!(report.requests, 1_035_360);
        assert_eq!(report.per_second, 129_408.52);
        assert_eq!((report.p50_ms, report.p99_ms), (0.29, 4.21));
        assert_eq!(report.errors, 5 + 3);
    }

    #[test]
    fn seconds_and_missing_error_lines_are_read_too() {
        let text = WRK
            .replace("    4.21ms", "    1.50s")
            .replace(
                "  Socket errors: connect 0, read 2, write 1, timeout 0\n",
                "",
            )
            .replace("  Non-2xx or 3xx responses: 5\n", "");
        let report = parse_wrk(&text).unwrap();
        assert_eq!((report.p99_ms, report.errors), (1500.0, 0));
    }

    #[test]
    fn output_without_a_distribution_is_unreadable() {
        assert!(parse_wrk("unable to connect to 127.0.0.1:1 Connection refused").is_none());
        assert!(parse_wrk(&WRK.replace("     99%    4.21ms\n", "")).is_none());
    }
}
