//! What a chaos scenario breaks ([`Fault`]), when, and the docker actions that break it and
//! watch the agent come back.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};

/// Load before the fault starts, and after the stack has recovered.
pub(super) const BEFORE: Duration = Duration::from_secs(5);
pub(super) const AFTER: Duration = Duration::from_secs(10);
/// How long Redis or Postgres stays stopped.
pub(super) const OUTAGE: Duration = Duration::from_secs(10);
/// The session lock's TTL in the chaos stack: turn deadline (8 s, docker/compose.chaos.yaml)
/// plus the server's fixed 30 s margin.
pub(crate) const LOCK_TTL: Duration = Duration::from_secs(38);
/// The longest an error answer may take while a backend is down (connect timeout 2 s, pool wait).
pub(super) const ERROR_DEADLINE: Duration = Duration::from_secs(10);

/// What a scenario breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    Redis,
    Postgres,
    Model,
    Term,
    Kill,
    /// The MCP server stopped: turns go on, their tool calls answered with tool errors.
    McpServer,
}

impl Fault {
    pub(super) const ALL: [Self; 6] = [
        Self::Redis,
        Self::Postgres,
        Self::Model,
        Self::Term,
        Self::Kill,
        Self::McpServer,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Redis => "redis-stopped-10s",
            Self::Postgres => "postgres-stopped-10s",
            Self::Model => "model-429-500-timeouts",
            Self::Term => "agent-sigterm",
            Self::Kill => "agent-sigkill",
            Self::McpServer => "mcp-server-stopped-10s",
        }
    }

    pub(super) fn prefix(self) -> String {
        format!("chaos-{self:?}").to_lowercase()
    }

    /// Whether an attempt's result is what the documented behaviour allows during this fault
    /// (docs/api.md: Redis down → 503, Postgres down → 503, model failures → 502/503/504, a draining
    /// server refuses new connections and ends streams with `shutdown`, a crashed holder's lock
    /// answers 409 until its TTL).
    pub(crate) fn allows(self, label: &str) -> bool {
        let status = label.split(' ').next().unwrap_or("");
        match self {
            Self::Redis | Self::Postgres => {
                status == "503" || label.starts_with("stream error storage_unavailable")
            }
            Self::Model => {
                matches!(status, "502" | "503" | "504")
                    || label.starts_with("stream error model_")
                    || label.starts_with("stream error turn_deadline")
            }
            Self::Term => {
                matches!(
                    label,
                    "connect" | "no answer" | "reset" | "stream shutdown stored=false"
                ) || status == "503"
            }
            Self::Kill => {
                matches!(label, "connect" | "no answer" | "reset" | "stream reset")
                    || label.starts_with("stream cut")
                    || matches!(status, "409" | "503")
            }
            // A tool source failing is the model's business (a tool error), never the client's.
            Self::McpServer => false,
        }
    }

    /// How long after the fault ends its errors may still show.
    pub(super) fn grace(self) -> Duration {
        match self {
            Self::Redis | Self::Term => Duration::from_secs(5),
            Self::Postgres => Duration::from_secs(8),
            // A model call that began in the fault finishes its retries (3 × 2 s + backoff).
            Self::Model => Duration::from_secs(10),
            // A dead holder's lock lives out its TTL; retries behind it wait for the lock.
            Self::Kill => LOCK_TTL + Duration::from_secs(10),
            Self::McpServer => Duration::ZERO,
        }
    }
}

/// Sends a signal to the agent's process from the host, as the kernel's OOM killer or a crash
/// would: `docker kill` counts as a manual stop, after which Docker never restarts a container.
pub(crate) fn signal_agent(container: &str, signal: &str) -> anyhow::Result<()> {
    let pid = inspect(container, "{{.State.Pid}}")?;
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()?;
    ensure!(status.success(), "kill -{signal} {pid} failed");
    Ok(())
}

pub(crate) fn wait_restarted(
    container: &str,
    before: &str,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if inspect(container, "{{.RestartCount}}")? != before
            && inspect(container, "{{.State.Status}}")? == "running"
        {
            return Ok(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("the agent was not restarted within {timeout:?}")
}

pub(crate) fn wait_healthy(container: &str, timeout: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if inspect(
            container,
            "{{if .State.Health}}{{.State.Health.Status}}{{end}}",
        )? == "healthy"
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{container} was not healthy within {timeout:?}")
}

/// Exit codes of the container's processes that died since `since` (Unix seconds).
pub(super) fn exit_codes(container: &str, since: u64) -> anyhow::Result<Vec<String>> {
    let output = docker_output(&[
        "events",
        "--since",
        &since.to_string(),
        "--until",
        &(unix_seconds() + 1).to_string(),
        "--filter",
        &format!("container={container}"),
        "--filter",
        "event=die",
        "--format",
        "{{index .Actor.Attributes \"exitCode\"}}",
    ])?;
    Ok(output.lines().map(str::to_owned).collect())
}

pub(crate) fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

pub(crate) fn inspect(container: &str, format: &str) -> anyhow::Result<String> {
    Ok(docker_output(&["inspect", "--format", format, container])?
        .trim()
        .to_owned())
}

pub(super) fn docker(arguments: &[&str]) -> anyhow::Result<()> {
    docker_output(arguments).map(|_| ())
}

pub(crate) fn docker_output(arguments: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("docker").args(arguments).output()?;
    ensure!(
        output.status.success(),
        "docker {} failed: {}",
        arguments.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
