//! `cargo xtask soak --minutes N`: the release server on Postgres and Redis under steady
//! multi-turn load (wrk, 16 connections, 200 sessions, a fake model answering in 5 ms) for N
//! minutes, sampled every 5 s: resident memory, open file descriptors, and the Postgres and Redis
//! connections it holds. Fails when, after the warm-up, RSS grows more than 5 %, descriptors
//! grow, or connections exceed the configured pool sizes.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use xshell::Shell;

use dev_harness::Spawned;

use crate::bench::wait_until_ok;

const CONNECTIONS: u32 = 16;
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
    for tool in ["wrk", "psql", "redis-cli"] {
        if Command::new("which")
            .arg(tool)
            .output()
            .map_or(true, |output| !output.status.success())
        {
            bail!("{tool} is not installed: apt-get install wrk postgresql-client redis-tools");
        }
    }
    let bin = crate::bench::build_release(shell)?;
    let services = dev_harness::Services::start_or_reuse()?;
    let (_model, model_port) = crate::bench::fake_model(&bin, 5)?;

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
        crate::bench::server_command(&bin, port, model_port)
            .env("AGENT_STORAGE__POOL_SIZE", POOL_SIZE.to_string())
            .env(
                "AGENT_STORAGE__REDIS_POOL_SIZE",
                REDIS_POOL_SIZE.to_string(),
            )
            .env("DATABASE_URL", &database_url)
            .env("REDIS_URL", &services.redis_url),
    )?;
    wait_until_ok(port, "/ready")?;

    let scratch = std::env::temp_dir().join(format!("agent-soak-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let script = scratch.join("turns.lua");
    // Multi-turn: each request continues one of 200 sessions, so histories grow to the window.
    std::fs::write(
        &script,
        r#"math.randomseed(os.time())
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local body = string.format('{"message":"turn %d","session_id":"soak-%d"}', math.random(1, 1000000), math.random(1, 200))
  return wrk.format(nil, "/agent", nil, body)
end
"#,
    )?;
    let duration = Duration::from_secs(minutes * 60);
    // A quarter of the run, at most a minute: pools, caches and allocator arenas fill up.
    let warm_up = (duration / 4).min(Duration::from_secs(60));
    println!(
        "xtask: soak for {minutes} min ({} s warm-up), {CONNECTIONS} connections, pools {POOL_SIZE} + {REDIS_POOL_SIZE}",
        warm_up.as_secs()
    );
    let mut wrk = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{CONNECTIONS}"),
            &format!("-d{}s", duration.as_secs()),
            "--latency",
            "--timeout",
            "10s",
            "-s",
        ])
        .arg(&script)
        .arg(format!("http://127.0.0.1:{port}/agent"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot start wrk")?;

    let started = Instant::now();
    let mut samples = Vec::new();
    while wrk.try_wait()?.is_none() {
        std::thread::sleep(SAMPLE_EVERY);
        if wrk.try_wait()?.is_some() {
            break;
        }
        let sample = Sample {
            at: started.elapsed(),
            rss_kib: status_kib(server.id(), "VmRSS:")?,
            fds: std::fs::read_dir(format!("/proc/{}/fd", server.id()))?.count() as u64,
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
    let output = wrk.wait_with_output()?;
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    let _ = std::fs::remove_dir_all(&scratch);
    drop(server);
    drop(services);
    println!("{report}");
    verdict(&samples, warm_up, &report)
}

fn verdict(samples: &[Sample], warm_up: Duration, report: &str) -> anyhow::Result<()> {
    let (warming, steady): (Vec<Sample>, Vec<Sample>) =
        samples.iter().partition(|sample| sample.at <= warm_up);
    if warming.is_empty() || steady.len() < 3 {
        bail!("too few samples ({}) for a verdict", samples.len());
    }
    // Medians of (up to) three at either end: one sample can catch a connection being replaced.
    let median = |window: &[Sample], field: fn(&Sample) -> u64| {
        let mut values: Vec<u64> = window.iter().map(field).collect();
        values.sort_unstable();
        values[values.len() / 2]
    };
    let base = &warming[warming.len().saturating_sub(3)..];
    let end = &steady[steady.len() - 3..];
    let rss_base = median(base, |sample| sample.rss_kib);
    let rss_end = median(end, |sample| sample.rss_kib);
    let growth = (rss_end as f64 - rss_base as f64) / rss_base as f64 * 100.0;
    let fds_base = median(base, |sample| sample.fds);
    let fds_end = median(end, |sample| sample.fds);
    let postgres_max = samples
        .iter()
        .map(|sample| sample.postgres)
        .max()
        .unwrap_or(0);
    let redis_max = samples.iter().map(|sample| sample.redis).max().unwrap_or(0);
    let non_2xx = report
        .lines()
        .find_map(|line| line.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .map_or(0, |count| count.trim().parse::<u64>().unwrap_or(u64::MAX));
    let socket_errors = report.contains("Socket errors:");
    println!(
        "\n| figure | value | bound |\n| --- | ---: | ---: |\n\
         | RSS after warm-up → end | {:.1} → {:.1} MiB ({growth:+.1} %) | ≤ +5 % |\n\
         | open descriptors after warm-up → end | {fds_base} → {fds_end} | no growth |\n\
         | Postgres connections (most) | {postgres_max} | ≤ {} |\n\
         | Redis connections (most) | {redis_max} | ≤ {} |\n\
         | failed requests | {non_2xx}{} | 0 |",
        rss_base as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        POOL_SIZE + SHARED_POOL,
        REDIS_POOL_SIZE + SHARED_POOL,
        if socket_errors {
            " + socket errors"
        } else {
            ""
        },
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
    if non_2xx > 0 || socket_errors {
        failures.push("requests failed".to_owned());
    }
    if !failures.is_empty() {
        bail!("soak failed: {}", failures.join("; "));
    }
    println!("xtask: soak passed");
    Ok(())
}

fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| {
            line.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// The server's connections, recognised by the application name it was given.
fn postgres_connections(database_url: &str) -> anyhow::Result<u64> {
    let output = Command::new("psql")
        .args([
            database_url,
            "-At",
            "-c",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{APPLICATION_NAME}'"
            ),
        ])
        .output()
        .context("psql failed to run")?;
    if !output.status.success() {
        bail!("psql: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().parse()?)
}

/// Redis's clients other than this query itself (the soak's Redis serves only the server).
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
