//! The Compose stack: `cargo xtask up`, `down`, `logs`, `ps`, and `e2e`, which builds the image,
//! runs the stack with the fake model, checks it over HTTP and with `docker inspect`, and always
//! tears it down.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use xshell::{Shell, cmd};

use dev_harness::http;

use crate::docker;

const PROJECT: &str = "agent-server";
const E2E_PROJECT: &str = "agent-e2e";

/// A Compose invocation for one project and set of files.
pub(crate) struct Compose {
    program: String,
    leading: Vec<String>,
    project: String,
    files: Vec<PathBuf>,
    pub(crate) env: Vec<(String, String)>,
}

impl Compose {
    fn new(project: &str, files: Vec<PathBuf>, env: Vec<(String, String)>) -> anyhow::Result<Self> {
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

fn random_secret() -> anyhow::Result<String> {
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
fn write_secrets(
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

fn main_compose() -> anyhow::Result<Compose> {
    Compose::new(
        PROJECT,
        vec![crate::project_root().join("compose.yaml")],
        Vec::new(),
    )
}

pub(crate) fn up(shell: &Shell, build: bool, nginx: bool) -> anyhow::Result<()> {
    docker::require_engine()?;
    let root = crate::project_root();
    prepare_env(&root)?;
    let options = crate::image::ImageOptions::new(None, None, None);
    if build || !image_exists(&options.tag) {
        crate::image::build(shell, &options)?;
    }
    let compose = main_compose()?;
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

/// A throwaway Compose project running the image with the fake model (e2e, chaos): random
/// secrets, a free port, torn down with its volumes when dropped.
pub(crate) struct TestStack {
    pub(crate) compose: Compose,
    pub(crate) port: u16,
    pub(crate) password: String,
    pub(crate) api_key: String,
    pub(crate) image: String,
}

impl TestStack {
    /// Builds the image and the fake model, starts `project` from compose.yaml,
    /// docker/compose.e2e.yaml and `overrides` (relative to the root) with `env` added and `up`
    /// as the Compose arguments, and waits until every service is healthy.
    pub(crate) fn start(
        shell: &Shell,
        project: &str,
        overrides: &[&str],
        env: Vec<(String, String)>,
        up: &[&str],
    ) -> anyhow::Result<Self> {
        docker::require_engine()?;
        let root = crate::project_root();
        let options = crate::image::ImageOptions::new(None, None, None);
        crate::image::build(shell, &options)?;
        let fake_image = build_fake_model(shell, &root, &options.runtime_image)?;
        let secrets = root.join("target").join(project).join("secrets");
        let password = random_secret()?;
        let api_key = format!("{project}-key-{}", random_secret()?);
        write_secrets(&secrets, &password, "", &api_key)?;
        let port = dev_harness::free_port()?;
        let mut all_env: Vec<(String, String)> = vec![
            ("POSTGRES_PASSWORD".into(), password.clone()),
            ("AGENT_PORT".into(), port.to_string()),
            ("AGENT_IMAGE".into(), options.tag.clone()),
            ("FAKE_MODEL_IMAGE".into(), fake_image),
            ("TEST_SECRETS_DIR".into(), secrets.display().to_string()),
        ];
        for name in [
            "POSTGRES_IMAGE",
            "REDIS_IMAGE",
            "NGINX_IMAGE",
            "RUST_IMAGE",
            "RUNTIME_IMAGE",
        ] {
            if let Ok(value) = std::env::var(name) {
                all_env.push((name.into(), value));
            }
        }
        all_env.extend(env);
        let mut files = vec![
            root.join("compose.yaml"),
            root.join("docker/compose.e2e.yaml"),
        ];
        files.extend(overrides.iter().map(|file| root.join(file)));
        let stack = Self {
            compose: Compose::new(project, files, all_env)?,
            port,
            password,
            api_key,
            image: options.tag,
        };
        stack.compose.run(up)?;
        let took = stack.compose.wait_healthy(Duration::from_secs(120))?;
        println!(
            "xtask: {project} stack healthy after {:.1} s",
            took.as_secs_f64()
        );
        Ok(stack)
    }

    /// The container id of a service.
    pub(crate) fn container(&self, service: &str) -> anyhow::Result<String> {
        let ids = self.containers(service)?;
        ensure!(
            ids.len() == 1,
            "{} containers for the service {service}",
            ids.len()
        );
        Ok(ids[0].clone())
    }

    /// The container ids of a service's replicas.
    pub(crate) fn containers(&self, service: &str) -> anyhow::Result<Vec<String>> {
        Ok(self
            .compose
            .output(&["ps", "-q", service])?
            .lines()
            .map(str::to_owned)
            .filter(|id| !id.is_empty())
            .collect())
    }
}

impl Drop for TestStack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.compose.command(&["logs", "--tail", "100"]).status();
        }
        let _ = self
            .compose
            .command(&["down", "--volumes", "--remove-orphans"])
            .status();
        println!("xtask: {} stack removed", self.compose.project);
    }
}

pub(crate) fn e2e(shell: &Shell) -> anyhow::Result<()> {
    let stack = TestStack::start(shell, E2E_PROJECT, &[], Vec::new(), &["up", "-d"])?;
    let (port, password, api_key) = (stack.port, &stack.password, &stack.api_key);
    let container = stack.container("agent")?;
    let wrong_key = format!("wrong-key-{}", random_secret()?);
    smoke(port, api_key, &wrong_key)?;
    inspect_container(&container, &stack.image, &[password, api_key])?;
    logs_leak_nothing(&container, &[password, api_key, &wrong_key])?;
    stop_during_stream(port, api_key, &container)?;
    println!("xtask: e2e passed");
    Ok(())
}

/// The fake model image: the project's fake OpenAI server on the runtime base image.
fn build_fake_model(shell: &Shell, root: &Path, runtime_image: &str) -> anyhow::Result<String> {
    // The dev build, with the test suite's features: `cargo xtask test` has already built it
    // (building fake-openai alone would resolve other features and recompile everything).
    cmd!(
        shell,
        "cargo test --workspace --all-targets --no-run --locked"
    )
    .run()?;
    let context = root.join("target/fake-model-context");
    std::fs::create_dir_all(&context)?;
    std::fs::copy(
        root.join("target/debug/fake-openai"),
        context.join("fake-openai"),
    )?;
    std::fs::write(
        context.join("Dockerfile"),
        "ARG RUNTIME_IMAGE\nFROM ${RUNTIME_IMAGE}\nCOPY fake-openai /usr/local/bin/fake-openai\nENV FAKE_OPENAI_HOST=0.0.0.0\nUSER 65532:65532\nENTRYPOINT [\"/usr/local/bin/fake-openai\", \"--port\", \"8080\"]\n",
    )?;
    let tag = "agent-fake-model:e2e";
    cmd!(
        shell,
        "docker build --quiet --tag {tag} --build-arg RUNTIME_IMAGE={runtime_image} {context}"
    )
    .env("DOCKER_BUILDKIT", "0")
    .run()?;
    Ok(tag.to_owned())
}

/// HTTP checks of the running stack.
fn smoke(port: u16, api_key: &str, wrong_key: &str) -> anyhow::Result<()> {
    let auth = format!("Bearer {api_key}");
    for path in ["/health", "/ready", "/startup"] {
        let (status, body) = request(port, "GET", path, None, None)?;
        ensure!(status == 200, "GET {path} answered {status}: {body}");
    }
    ensure!(request(port, "GET", "/health", None, None)?.1.trim() == r#"{"status":"healthy"}"#);
    let (status, _) = request(port, "POST", "/agent", None, Some(r#"{"message":"hi"}"#))?;
    ensure!(
        status == 401,
        "an unauthenticated request answered {status}"
    );
    let wrong = format!("Bearer {wrong_key}");
    let (status, body) = request(
        port,
        "POST",
        "/agent",
        Some(&wrong),
        Some(r#"{"message":"hi"}"#),
    )?;
    ensure!(
        status == 401 && body.contains("\"error\""),
        "a wrong API key answered {status}: {body}"
    );
    let (status, body) = request(
        port,
        "POST",
        "/agent",
        Some(&auth),
        Some(r#"{"message":"first turn","session_id":"e2e-session"}"#),
    )?;
    ensure!(
        status == 200 && body.contains("echo: first turn"),
        "turn 1: {status} {body}"
    );
    let (status, body) = request(
        port,
        "POST",
        "/agent",
        Some(&auth),
        Some(r#"{"message":"second turn","session_id":"e2e-session"}"#),
    )?;
    ensure!(
        status == 200 && body.contains("echo: second turn"),
        "turn 2: {status} {body}"
    );
    let (status, body) = request(port, "GET", "/sessions/e2e-session", Some(&auth), None)?;
    ensure!(
        status == 200 && body.matches("\"sequence\"").count() == 4,
        "history: {status} {body}"
    );
    let (status, body) = request(
        port,
        "POST",
        "/agent/stream",
        Some(&auth),
        Some(r#"{"message":"stream please"}"#),
    )?;
    ensure!(
        status == 200 && body.contains("event: done"),
        "stream: {status} {body}"
    );
    let (status, body) = request(port, "GET", "/metrics", None, None)?;
    ensure!(
        status == 200 && body.contains("http_requests_total"),
        "metrics: {status}"
    );
    println!(
        "xtask: smoke tests passed (probes, no key and a wrong key refused, two turns, history, stream, metrics)"
    );
    Ok(())
}

/// No secret, and not the wrong key a client tried, appears in any line the agent logged.
fn logs_leak_nothing(container: &str, secrets: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("docker").args(["logs", container]).output()?;
    let logs = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    ensure!(
        logs.lines().count() > 3,
        "the agent logged almost nothing: {logs}"
    );
    for secret in secrets {
        ensure!(
            !logs.contains(secret),
            "a secret or a presented API key appears in the agent's logs"
        );
    }
    println!(
        "xtask: no secret and no presented API key in the agent's {} log lines",
        logs.lines().count()
    );
    Ok(())
}

fn inspect_container(container: &str, image: &str, secrets: &[&str]) -> anyhow::Result<()> {
    let inspect = |format: &str, target: &str| -> anyhow::Result<String> {
        let output = Command::new("docker")
            .args(["inspect", "--format", format, target])
            .output()?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    let user = inspect("{{.Config.User}}", container)?;
    ensure!(
        user == "65532:65532",
        "the agent runs as {user:?}, not 65532"
    );
    let healthcheck = inspect("{{json .Config.Healthcheck.Test}}", container)?;
    ensure!(
        healthcheck.contains("agent-server") && healthcheck.contains("healthcheck"),
        "healthcheck: {healthcheck}"
    );
    ensure!(
        inspect("{{.HostConfig.ReadonlyRootfs}}", container)? == "true",
        "the root filesystem is writable"
    );
    let shell = Command::new("docker")
        .args(["exec", container, "/bin/sh", "-c", "true"])
        .output()?;
    ensure!(!shell.status.success(), "the image has a shell");
    let exposed = [
        inspect("{{json .Config.Env}}", container)?,
        inspect("{{json .Config.Labels}}", container)?,
        String::from_utf8_lossy(
            &Command::new("docker")
                .args(["history", "--no-trunc", image])
                .output()?
                .stdout,
        )
        .into_owned(),
    ];
    for secret in secrets {
        ensure!(
            exposed.iter().all(|text| !text.contains(secret)),
            "a secret appears in the container's env, labels or image history"
        );
    }
    println!(
        "xtask: the agent runs as 65532 with a read-only root, no shell, a healthcheck, and no secret in env, labels or history"
    );
    Ok(())
}

/// `docker stop` during a streaming turn: the stream completes, the container exits 0 and logs
/// the drain.
fn stop_during_stream(port: u16, api_key: &str, container: &str) -> anyhow::Result<()> {
    let auth = format!("Bearer {api_key}");
    let stream = std::thread::spawn(move || {
        request(
            port,
            "POST",
            "/agent/stream",
            Some(&auth),
            Some(r#"{"message":"sleep 2500 then answer"}"#),
        )
    });
    std::thread::sleep(Duration::from_millis(700));
    let stopped = Command::new("docker")
        .args(["stop", "--time", "15", container])
        .output()?;
    ensure!(stopped.status.success(), "docker stop failed");
    let (status, body) = stream
        .join()
        .map_err(|_| anyhow::anyhow!("the stream thread panicked"))??;
    ensure!(status == 200, "the stream answered {status}");
    ensure!(
        body.contains("event: done") || body.contains("event: shutdown"),
        "the stream ended without done or shutdown: {body}"
    );
    let exit = Command::new("docker")
        .args(["inspect", "--format", "{{.State.ExitCode}}", container])
        .output()?;
    let exit = String::from_utf8_lossy(&exit.stdout).trim().to_owned();
    ensure!(exit == "0", "the agent exited with {exit}");
    let logs = Command::new("docker").args(["logs", container]).output()?;
    let logs =
        String::from_utf8_lossy(&logs.stdout).into_owned() + &String::from_utf8_lossy(&logs.stderr);
    ensure!(
        logs.contains("shutdown began") && logs.contains("stopped"),
        "the log does not show the drain"
    );
    println!("xtask: docker stop during a stream: the stream ended cleanly, exit 0, drain logged");
    Ok(())
}

/// A request with the e2e defaults: an optional bearer token, a 30 s timeout.
fn request(
    port: u16,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    json: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let headers: Vec<(&str, &str)> = authorization
        .map(|value| ("Authorization", value))
        .into_iter()
        .collect();
    Ok(http::call(
        port,
        method,
        path,
        &headers,
        json,
        Duration::from_secs(30),
    )?)
}
