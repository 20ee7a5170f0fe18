//! The processes' harness of the system checks: the release server and the fake model as child
//! processes, waiting for them, and what /proc says about a process (CPU ticks, memory).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use dev_harness::Spawned;
use procfs::process::Process;
use xshell::{Shell, cmd};

/// A running process, as procfs reads it.
fn process(pid: u32) -> anyhow::Result<Process> {
    let pid = i32::try_from(pid).context("a pid beyond i32")?;
    Process::new(pid).with_context(|| format!("no process {pid}"))
}

/// utime + stime of a process, in clock ticks.
pub(crate) fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = process(pid)?.stat()?;
    Ok(stat.utime + stat.stime)
}

pub(crate) fn clock_ticks_per_second() -> f64 {
    procfs::ticks_per_second() as f64
}

/// The most memory a process has held (VmHWM), in KiB.
pub(crate) fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    Ok(process(pid)?.status()?.vmhwm.unwrap_or(0))
}

/// The memory a process holds now (VmRSS), in KiB.
pub(crate) fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    process(pid)?
        .status()?
        .vmrss
        .with_context(|| format!("no VmRSS for process {pid}"))
}

/// A process's open descriptors and threads.
pub(crate) fn descriptors_and_threads(pid: u32) -> anyhow::Result<(usize, u64)> {
    let process = process(pid)?;
    Ok((process.fd_count()?, process.status()?.threads))
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

/// The release server of another build, for the bench to alternate with this one: `spec` is a
/// directory holding its `agent-server`, or a git revision, checked out in a worktree under
/// `target/bench-baseline/` and built there in a target directory of its own (the first build
/// takes minutes; later ones reuse it).
pub(crate) fn baseline_build(shell: &Shell, spec: &str) -> anyhow::Result<std::path::PathBuf> {
    let given = Path::new(spec);
    if given.join("agent-server").is_file() {
        return Ok(given.to_path_buf());
    }
    let root = crate::project_root();
    let revision = format!("{spec}^{{commit}}");
    let commit = cmd!(shell, "git -C {root} rev-parse --verify {revision}")
        .read()
        .with_context(|| {
            format!("--baseline {spec}: neither a directory with agent-server nor a git revision")
        })?;
    let base = root.join("target/bench-baseline");
    let source = base.join("source");
    if source.join(".git").exists() {
        cmd!(
            shell,
            "git -C {source} checkout --quiet --force --detach {commit}"
        )
        .run()?;
    } else {
        cmd!(shell, "git -C {root} worktree prune").run()?;
        cmd!(
            shell,
            "git -C {root} worktree add --force --detach {source} {commit}"
        )
        .run()?;
    }
    let target = base.join("target");
    let manifest = source.join("Cargo.toml");
    cmd!(
        shell,
        "cargo build --release --locked --manifest-path {manifest} --target-dir {target} --package agent-server --bin agent-server"
    )
    .run()?;
    println!("xtask: baseline {spec} is commit {commit}");
    Ok(target.join("release"))
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

/// The Postgres and Redis processes behind a bench's URLs, for the CPU the whole stack spends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StackProcesses {
    postmaster: u32,
    redis: u32,
}

impl StackProcesses {
    /// Finds the postmaster (the parent of the server's checkpointer) and Redis's process (its
    /// `INFO server`); both must run on this machine.
    pub(crate) fn find(database_url: &str, redis_url: &str) -> anyhow::Result<Self> {
        let checkpointer: u32 = psql(
            database_url,
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'",
        )?
        .first()
        .and_then(|pid| pid.parse().ok())
        .context("no checkpointer in pg_stat_activity")?;
        let postmaster = u32::try_from(process(checkpointer)?.stat()?.ppid)
            .context("no parent of the checkpointer")?;
        let output = Command::new("redis-cli")
            .args(["-u", redis_url, "INFO", "server"])
            .output()
            .context("redis-cli failed to run (apt-get install redis-tools)")?;
        let redis = String::from_utf8_lossy(&output.stdout)
            .lines()
            .find_map(|line| line.strip_prefix("process_id:")?.trim().parse().ok())
            .context("no process_id in Redis's INFO server")?;
        Ok(Self { postmaster, redis })
    }

    /// CPU ticks used so far by Redis, the postmaster, the children it has reaped and those
    /// still running (backends, checkpointer, WAL writer, autovacuum).
    pub(crate) fn ticks(&self) -> anyhow::Result<u64> {
        let postmaster = process(self.postmaster)?.stat()?;
        let reaped = u64::try_from(postmaster.cutime + postmaster.cstime).unwrap_or(0);
        let mut ticks = cpu_ticks(self.redis)? + postmaster.utime + postmaster.stime + reaped;
        for child in procfs::process::all_processes()?.flatten() {
            if let Ok(stat) = child.stat()
                && u32::try_from(stat.ppid) == Ok(self.postmaster)
            {
                ticks += stat.utime + stat.stime;
            }
        }
        Ok(ticks)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_read_from_proc() {
        let pid = std::process::id();
        assert!(rss_kib(pid).unwrap() > 0);
        assert!(peak_rss_kib(pid).unwrap() > 0);
        let (descriptors, threads) = descriptors_and_threads(pid).unwrap();
        assert!(descriptors >= 3 && threads >= 1, "{descriptors} {threads}");
        cpu_ticks(pid).unwrap();
        assert!(clock_ticks_per_second() > 0.0);
    }
}
