//! The processes' harness of the system checks: the release server and the fake model as child
//! processes, waiting for them, and what /proc says about a process (CPU ticks, memory).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use dev_harness::Spawned;
use xshell::{Shell, cmd};

/// utime + stime of a process, in clock ticks.
pub(crate) fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let field = |index: usize| {
        fields
            .get(index)
            .and_then(|value| value.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(field(11) + field(12))
}

pub(crate) fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8_lossy(&output.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

pub(crate) fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(status
        .lines()
        .find_map(|line| {
            line.strip_prefix("VmHWM:")?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0))
}

/// Builds the release server and the test binaries; answers their directory.
pub(crate) fn build_release(shell: &Shell) -> anyhow::Result<std::path::PathBuf> {
    cmd!(
        shell,
        "cargo build --release --locked --package agent-server --package test-support --package fake-openai --bins"
    )
    .run()?;
    Ok(crate::project_root().join("target/release"))
}

/// The release server on `port` with a clean environment: two workers, JSON logs, no shutdown
/// delay, rate limits out of the way, the model at `model_port`. Callers add storage settings.
pub(crate) fn server_command(bin: &Path, port: u16, model_port: u16) -> Command {
    let mut command = Command::new(bin.join("agent-server"));
    command
        .env_clear()
        .env("PORT", port.to_string())
        .env("WORKERS", "2")
        .env("AGENT_LOG_FORMAT", "json")
        .env("AGENT_SERVER__SHUTDOWN_DELAY", "0s")
        .env("AGENT_RATE_LIMIT__REQUESTS", "1000000000")
        .env(
            "OPENAI_BASE_URL",
            format!("http://127.0.0.1:{model_port}/v1"),
        );
    command
}

/// Fails naming the Debian package of the first of `tools` (command, package) not on the PATH.
pub(crate) fn require_tools(tools: &[(&str, &str)]) -> anyhow::Result<()> {
    for (tool, package) in tools {
        let found = Command::new("which")
            .arg(tool)
            .output()
            .is_ok_and(|output| output.status.success());
        if !found {
            bail!("{tool} is not installed: apt-get install {package}");
        }
    }
    Ok(())
}

/// `command` run under `prlimit` with both descriptor limits at `nofile`, so it cannot raise its
/// own (prlimit execs it: the process id stays the same).
pub(crate) fn with_descriptor_limit(command: &Command, nofile: u64) -> Command {
    let mut limited = Command::new("prlimit");
    limited
        .arg(format!("--nofile={nofile}:{nofile}"))
        .arg(command.get_program())
        .args(command.get_args())
        .env_clear();
    for (name, value) in command.get_envs() {
        if let Some(value) = value {
            limited.env(name, value);
        }
    }
    limited
}

/// Runs `query` with psql against `database_url`; answers its rows, one line each (`-At`).
pub(crate) fn psql(database_url: &str, query: &str) -> anyhow::Result<Vec<String>> {
    let output = Command::new("psql")
        .args([database_url, "-At", "-c", query])
        .output()
        .context("psql failed to run (apt-get install postgresql-client)")?;
    if !output.status.success() {
        bail!("psql: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

/// Starts the fake model server answering after `delay_ms`; answers it and its port.
pub(crate) fn fake_model(bin: &Path, delay_ms: u64) -> anyhow::Result<(Spawned, u16)> {
    let port = dev_harness::free_port()?;
    let model = Spawned::start(Command::new(bin.join("fake-openai")).args([
        "--port",
        &port.to_string(),
        "--delay-ms",
        &delay_ms.to_string(),
    ]))?;
    wait_until_ok(port, "/health")?;
    Ok((model, port))
}

/// `GET` on 127.0.0.1 with the shared client and a 5 s bound.
pub(crate) fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    Ok(dev_harness::http::call(
        port,
        "GET",
        path,
        &[],
        None,
        Duration::from_secs(5),
    )?)
}

pub(crate) fn wait_until_ok(port: u16, path: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if matches!(http_get(port, path), Ok((200, _))) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing answered 200 on 127.0.0.1:{port}{path} within 30 s")
}

/// KiB in MiB.
pub(crate) fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A field of /proc/<pid>/status in KiB (`VmRSS:`, `VmHWM:`).
pub(crate) fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
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
