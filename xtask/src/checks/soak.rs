//! `cargo xtask soak --minutes N`: the release server on Postgres and Redis under steady
//! multi-turn load (wrk, 16 connections, 200 sessions, a fake model answering in 5 ms) for N
//! minutes, sampled every 5 s: resident memory, open file descriptors, and the Postgres and Redis
//! connections it holds. Fails when, after the warm-up, RSS grows more than 5 %, descriptors
//! grow, or connections exceed the configured pool sizes.

use std::process::Command;
use std::time::{Duration, Instant};

use std::sync::Arc;

use anyhow::{Context, bail};
use xshell::Shell;

use dev_harness::Spawned;
use dev_harness::load::{Load, Plan, Request, RequestFn};

use crate::checks::harness::{
    build_release, descriptors_and_threads, fake_model, psql, require_tools, rss_kib,
    server_command, wait_until_ok,
};

const CONNECTIONS: usize = 16;
const POOL_SIZE: u64 = 8;
const REDIS_POOL_SIZE: u64 = 8;
/// Besides the request pools: the process-wide pools of the probes (see backends.rs).
const SHARED_POOL: u64 = 2;
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
const APPLICATION_NAME: &str = "agent-soak";

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    rss_kib: u64,
    fds: u64,
    postgres: u64,
    redis: u64,
}

pub(crate) fn run(shell: &Shell, minutes: u64) -> anyhow::Result<()> {
    if minutes == 0 {
        bail!("--minutes must be at least 1");
    }
    require_tools(&[("psql", "postgresql-client"), ("redis-cli", "redis-tools")])?;
    let bin = build_release(shell)?;
    let services = dev_harness::Services::start_or_reuse()?;
    let (_model, model_port) = fake_model(&bin, 5)?;

    let port = dev_harness::free_port()?;
    let separator = if services.database_url.contains('?') {
        '&'
    } else {
        '?'
    };
    let database_url = format!(
        "{}{separator}application_name={APPLICATION_NAME}",
        services.database_url
    );
    let server = Spawned::start(
        server_command(&bin, port, model_port)
            .env("AGENT_STORAGE__POOL_SIZE", POOL_SIZE.to_string())
            .env(
                "AGENT_STORAGE__REDIS_POOL_SIZE",
                REDIS_POOL_SIZE.to_string(),
            )
            .env("DATABASE_URL", &database_url)
            .env("REDIS_URL", &services.redis_url),
    )?;
    wait_until_ok(port, "/ready")?;

    let duration = Duration::from_secs(minutes * 60);
    // A quarter of the run, at most a minute: pools, caches and allocator arenas fill up.
    let warm_up = (duration / 4).min(Duration::from_secs(60));
    println!(
        "xtask: soak for {minutes} min ({} s warm-up), {CONNECTIONS} connections, pools {POOL_SIZE} + {REDIS_POOL_SIZE}",
        warm_up.as_secs()
    );
    // Multi-turn: each request continues one of 200 sessions, so histories grow to the window.
    let turns: Arc<RequestFn> = Arc::new(|n| {
        Request::post_json(
            "/agent",
            format!(
                r#"{{"message":"turn {n}","session_id":"soak-{}"}}"#,
                n % 200
            ),
        )
    });
    let load = Load::start(port, Plan::clients(CONNECTIONS), turns)?;
    // Every request of the run counts: a failure during the warm-up is a failure too.
    load.begin_measuring();
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() + SAMPLE_EVERY <= duration {
        std::thread::sleep(SAMPLE_EVERY);
        let sample = Sample {
            at: started.elapsed(),
            rss_kib: rss_kib(server.id())?,
            fds: descriptors_and_threads(server.id())?.0 as u64,
            postgres: postgres_connections(&services.database_url)?,
            redis: redis_connections(&services.redis_url)?,
        };
        println!(
            "xtask: {:>4} s  RSS {:>6.1} MiB  fds {:>3}  postgres {:>2}  redis {:>2}",
            sample.at.as_secs(),
            sample.rss_kib as f64 / 1024.0,
            sample.fds,
            sample.postgres,
            sample.redis
        );
        samples.push(sample);
    }
    let report = load.report()?;
    drop(server);
    drop(services);
    println!(
        "xtask: {} requests ({:.0}/s), p50 {:.2} ms, p99 {:.2} ms, answers by status {:?}, {} without an answer",
        report.requests,
        report.per_second,
        report.p50_ms,
        report.p99_ms,
        report.statuses,
        report.failures
    );
    let judged = judge(&samples, warm_up, report.errors);
    println!("\n{}", judged.table);
    if !judged.failures.is_empty() {
        bail!("soak failed: {}", judged.failures.join("; "));
    }
    println!("xtask: soak passed");
    Ok(())
}

/// The soak's verdict: its table, and what broke a bound.
#[derive(Debug)]
struct Verdict {
    table: String,
    failures: Vec<String>,
}

/// Judges the samples: RSS may grow at most 5 % and descriptors not at all after the warm-up,
/// connections stay within the pools, no request fails.
fn judge(samples: &[Sample], warm_up: Duration, failed_requests: u64) -> Verdict {
    let (warming, steady): (Vec<&Sample>, Vec<&Sample>) =
        samples.iter().partition(|sample| sample.at <= warm_up);
    if warming.is_empty() || steady.len() < 3 {
        return Verdict {
            table: String::new(),
            failures: vec![format!("too few samples ({}) for a verdict", samples.len())],
        };
    }
    // Medians of (up to) three at either end: one sample can catch a connection being replaced.
    let median = |window: &[&Sample], field: fn(&Sample) -> u64| {
        let mut values: Vec<u64> = window.iter().map(|sample| field(sample)).collect();
        values.sort_unstable();
        values[values.len() / 2]
    };
    let base = &warming[warming.len().saturating_sub(3)..];
    let end = &steady[steady.len() - 3..];
    let rss_base = median(base, |sample| sample.rss_kib);
    let rss_end = median(end, |sample| sample.rss_kib);
    let growth = (rss_end as f64 - rss_base as f64) / rss_base.max(1) as f64 * 100.0;
    let fds_base = median(base, |sample| sample.fds);
    let fds_end = median(end, |sample| sample.fds);
    let postgres_max = samples
        .iter()
        .map(|sample| sample.postgres)
        .max()
        .unwrap_or(0);
    let redis_max = samples.iter().map(|sample| sample.redis).max().unwrap_or(0);
    let table = format!(
        "| figure | value | bound |\n| --- | ---: | ---: |\n\
         | RSS after warm-up → end | {:.1} → {:.1} MiB ({growth:+.1} %) | ≤ +5 % |\n\
         | open descriptors after warm-up → end | {fds_base} → {fds_end} | no growth |\n\
         | Postgres connections (most) | {postgres_max} | ≤ {} |\n\
         | Redis connections (most) | {redis_max} | ≤ {} |\n\
         | failed requests | {failed_requests} | 0 |",
        rss_base as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        POOL_SIZE + SHARED_POOL,
        REDIS_POOL_SIZE + SHARED_POOL,
    );
    let mut failures = Vec::new();
    if growth > 5.0 {
        failures.push(format!("RSS grew {growth:.1} % after the warm-up"));
    }
    if fds_end > fds_base {
        failures.push(format!(
            "open descriptors grew from {fds_base} to {fds_end}"
        ));
    }
    if postgres_max > POOL_SIZE + SHARED_POOL {
        failures.push(format!("{postgres_max} Postgres connections"));
    }
    if redis_max > REDIS_POOL_SIZE + SHARED_POOL {
        failures.push(format!("{redis_max} Redis connections"));
    }
    if failed_requests > 0 {
        failures.push(format!("{failed_requests} requests failed"));
    }
    Verdict { table, failures }
}

/// The server's connections, recognised by the application name it was given.
fn postgres_connections(database_url: &str) -> anyhow::Result<u64> {
    let rows = psql(
        database_url,
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{APPLICATION_NAME}'"
        ),
    )?;
    Ok(rows
        .first()
        .context("psql answered no row")?
        .trim()
        .parse()?)
}

fn redis_connections(redis_url: &str) -> anyhow::Result<u64> {
    let output = Command::new("redis-cli")
        .args(["-u", redis_url, "CLIENT", "LIST"])
        .output()
        .context("redis-cli failed to run")?;
    if !output.status.success() {
        bail!(
            "redis-cli: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let clients = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.starts_with("id=") && !line.contains("cmd=client|list"))
        .count();
    Ok(clients as u64)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Sample, judge};

    /// Samples every 5 s for a minute: RSS in KiB and descriptors from the functions given,
    /// connections within the pools.
    fn samples(rss: impl Fn(u64) -> u64, fds: impl Fn(u64) -> u64) -> Vec<Sample> {
        (1..=12)
            .map(|index| Sample {
                at: Duration::from_secs(index * 5),
                rss_kib: rss(index),
                fds: fds(index),
                postgres: 9,
                redis: 3,
            })
            .collect()
    }

    #[test]
    fn a_flat_run_passes() {
        let verdict = judge(&samples(|_| 16_000, |_| 66), Duration::from_secs(15), 0);
        assert!(verdict.failures.is_empty(), "{verdict:?}");
        assert!(
            verdict.table.contains("| failed requests | 0 | 0 |"),
            "{}",
            verdict.table
        );
    }

    #[test]
    fn growth_after_the_warm_up_fails_and_growth_during_it_does_not() {
        let warming_only = judge(
            &samples(|i| if i == 1 { 8_000 } else { 16_000 }, |_| 66),
            Duration::from_secs(15),
            0,
        );
        assert!(warming_only.failures.is_empty(), "{warming_only:?}");
        let leaking = judge(
            &samples(|i| 16_000 + i * 300, |i| 60 + i),
            Duration::from_secs(15),
            0,
        );
        assert_eq!(leaking.failures.len(), 2, "{leaking:?}");
        assert!(leaking.failures[0].starts_with("RSS grew"), "{leaking:?}");
        assert!(
            leaking.failures[1].starts_with("open descriptors grew"),
            "{leaking:?}"
        );
    }

    #[test]
    fn one_outlier_sample_at_either_end_does_not_decide() {
        let verdict = judge(
            &samples(|i| if i == 12 { 40_000 } else { 16_000 }, |_| 66),
            Duration::from_secs(15),
            0,
        );
        assert!(verdict.failures.is_empty(), "{verdict:?}");
    }

    #[test]
    fn failed_requests_excess_connections_and_too_few_samples_fail() {
        let mut many = samples(|_| 16_000, |_| 66);
        many[5].postgres = 11;
        many[6].redis = 11;
        let verdict = judge(&many, Duration::from_secs(15), 2);
        assert_eq!(
            verdict.failures,
            vec![
                "11 Postgres connections",
                "11 Redis connections",
                "2 requests failed"
            ]
        );
        let few = judge(
            &samples(|_| 16_000, |_| 66)[..4],
            Duration::from_secs(15),
            0,
        );
        assert!(few.failures[0].starts_with("too few samples"), "{few:?}");
    }
}
