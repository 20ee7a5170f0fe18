//! The Compose stack for developers: `cargo xtask up`, `down`, `logs`, `ps`, and the Compose
//! invocation (v1 or v2) the system checks use too.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use xshell::Shell;

use crate::tasks::docker;

const PROJECT: &str = "agent-server";

/// A Compose invocation for one project and set of files.
pub(crate) struct Compose {
    program: String,
    leading: Vec<String>,
    pub(crate) project: String,
    files: Vec<PathBuf>,
    pub(crate) env: Vec<(String, String)>,
}

impl Compose {
    pub(crate) fn new(
        project: &str,
        files: Vec<PathBuf>,
        env: Vec<(String, String)>,
    ) -> anyhow::Result<Self> {
        let (program, leading) = docker::compose_command()?;
        Ok(Self {
            program,
            leading,
            project: project.to_owned(),
            files,
            env,
        })
    }

    pub(crate) fn command(&self, arguments: &[&str]) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.leading).args(["-p", &self.project]);
        for file in &self.files {
            command.arg("-f").arg(file);
        }
        command.args(arguments).current_dir(crate::project_root());
        command.envs(
            self.env
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str())),
        );
        command
    }

    pub(crate) fn run(&self, arguments: &[&str]) -> anyhow::Result<()> {
        let status = self
            .command(arguments)
            .status()
            .with_context(|| format!("cannot run {}", self.program))?;
        ensure!(status.success(), "`compose {}` failed", arguments.join(" "));
        Ok(())
    }

    pub(crate) fn output(&self, arguments: &[&str]) -> anyhow::Result<String> {
        let output = self.command(arguments).stderr(Stdio::inherit()).output()?;
        ensure!(
            output.status.success(),
            "`compose {}` failed",
            arguments.join(" ")
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Waits until every container of the project is healthy (or running, without a
    /// healthcheck); on timeout prints the logs of the others and fails.
    pub(crate) fn wait_healthy(&self, timeout: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            let ids: Vec<String> = self
                .output(&["ps", "-q"])?
                .lines()
                .map(str::to_owned)
                .filter(|id| !id.is_empty())
                .collect();
            let states: Vec<(String, String)> = ids
                .iter()
                .map(|id| container_state(id))
                .collect::<anyhow::Result<_>>()?;
            let waiting: Vec<&(String, String)> = states
                .iter()
                .filter(|(_, state)| state != "healthy" && state != "running (no healthcheck)")
                .collect();
            if !ids.is_empty() && waiting.is_empty() {
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                for (name, state) in &waiting {
                    eprintln!("xtask: {name} is {state}; its last log lines:");
                    let _ = Command::new("docker")
                        .args(["logs", "--tail", "50", name.trim_start_matches('/')])
                        .status();
                }
                bail!("the stack was not healthy within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

fn container_state(id: &str) -> anyhow::Result<(String, String)> {
    let format = "{{.Name}}|{{.State.Status}}|{{if .State.Health}}{{.State.Health.Status}}{{end}}";
    let output = Command::new("docker")
        .args(["inspect", "--format", format, id])
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let mut parts = text.split('|');
    let name = parts.next().unwrap_or_default().to_owned();
    let status = parts.next().unwrap_or_default();
    let health = parts.next().unwrap_or_default();
    let state = match (status, health) {
        ("running", "") => "running (no healthcheck)".to_owned(),
        ("running", health) => health.to_owned(),
        (status, _) => status.to_owned(),
    };
    Ok((name, state))
}

pub(crate) fn random_secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// Creates `.env` from `.env.example` (with a random Postgres password) when there is none,
/// and writes `.secrets/` from it; answers the password.
fn prepare_env(root: &Path) -> anyhow::Result<String> {
    let env_path = root.join(".env");
    if !env_path.exists() {
        let example =
            std::fs::read_to_string(root.join(".env.example")).context("no .env.example")?;
        let password = random_secret()?;
        let filled: String = example
            .lines()
            .map(|line| {
                if line == "POSTGRES_PASSWORD=" {
                    format!("POSTGRES_PASSWORD={password}")
                } else {
                    line.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&env_path, filled + "\n")?;
        set_mode(&env_path, 0o600)?;
        println!("xtask: created .env with a random POSTGRES_PASSWORD");
    }
    let env = std::fs::read_to_string(&env_path)?;
    let value = |name: &str| {
        env.lines()
            .find_map(|line| line.strip_prefix(&format!("{name}=")))
            .map(str::to_owned)
            .filter(|value| !value.is_empty())
    };
    let password = value("POSTGRES_PASSWORD").context("POSTGRES_PASSWORD is empty in .env")?;
    let secrets = root.join(".secrets");
    write_secrets(
        &secrets,
        &password,
        &std::env::var("OPENAI_API_KEY")
            .ok()
            .or_else(|| value("OPENAI_API_KEY"))
            .unwrap_or_default(),
        &std::env::var("AGENT_API_KEYS")
            .ok()
            .or_else(|| value("AGENT_API_KEYS"))
            .unwrap_or_default(),
    )?;
    Ok(password)
}

/// The secret files the agent reads through `_FILE` (world-readable: the container user is not
/// the host user; the directory keeps them out of the repository).
pub(crate) fn write_secrets(
    directory: &Path,
    password: &str,
    openai_key: &str,
    api_keys: &str,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(directory)?;
    let files = [
        (
            "database_url",
            format!("postgres://agent:{password}@postgres:5432/agent"),
        ),
        ("openai_api_key", openai_key.to_owned()),
        ("api_keys", api_keys.to_owned()),
    ];
    for (name, value) in files {
        let path = directory.join(name);
        std::fs::write(&path, value)?;
        set_mode(&path, 0o644)?;
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn image_exists(tag: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", tag])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The stack's Compose files: compose.yaml, and the MCP override when asked.
fn main_compose_with(mcp: bool) -> anyhow::Result<Compose> {
    let root = crate::project_root();
    let mut files = vec![root.join("compose.yaml")];
    if mcp {
        files.push(root.join("docker/compose.mcp.yaml"));
    }
    Compose::new(PROJECT, files, Vec::new())
}

fn main_compose() -> anyhow::Result<Compose> {
    main_compose_with(false)
}

pub(crate) fn up(shell: &Shell, build: bool, nginx: bool, mcp: bool) -> anyhow::Result<()> {
    docker::require_engine()?;
    let root = crate::project_root();
    prepare_env(&root)?;
    let options = crate::tasks::image::ImageOptions::new(None, None, None);
    if build || !image_exists(&options.tag) {
        crate::tasks::image::build(shell, &options)?;
    }
    let compose = main_compose_with(mcp)?;
    let mut arguments = vec!["up", "-d"];
    if nginx {
        arguments = vec!["--profile", "nginx", "up", "-d"];
    }
    compose.run(&arguments)?;
    let took = compose.wait_healthy(Duration::from_secs(120))?;
    let port = std::env::var("AGENT_PORT").unwrap_or_else(|_| "8000".into());
    println!(
        "xtask: all services healthy after {:.1} s",
        took.as_secs_f64()
    );
    println!("agent-server: http://127.0.0.1:{port}");
    println!("try: curl http://127.0.0.1:{port}/health");
    Ok(())
}

pub(crate) fn down(volumes: bool) -> anyhow::Result<()> {
    docker::require_engine()?;
    let mut arguments = vec!["--profile", "nginx", "down", "--remove-orphans"];
    if volumes {
        arguments.push("--volumes");
    }
    main_compose()?.run(&arguments)
}

pub(crate) fn logs(service: Option<String>) -> anyhow::Result<()> {
    let mut arguments = vec!["logs", "--tail", "200"];
    if let Some(service) = &service {
        arguments.push(service);
    }
    main_compose()?.run(&arguments)
}

pub(crate) fn ps() -> anyhow::Result<()> {
    main_compose()?.run(&["ps"])
}
