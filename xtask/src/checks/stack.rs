//! The containers' harness of the system checks: a throwaway Compose project running the image
//! with the fake model (e2e, chaos, replicas).

use std::path::Path;
use std::time::Duration;

use anyhow::ensure;
use xshell::{Shell, cmd};

use crate::tasks::compose::{Compose, random_secret, write_secrets};
use crate::tasks::{docker, standin};

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
        let options = crate::tasks::image::ImageOptions::new(None, None, None);
        let standins = images(
            shell,
            &options,
            overrides.contains(&"docker/compose.mcp.yaml"),
            up.contains(&"nginx"),
        )?;
        crate::tasks::image::build(shell, &options)?;
        let fake_image = build_fake_model(shell, &root, &options.runtime_image)?;
        let secrets = root.join("target").join(project).join("secrets");
        let password = random_secret()?;
        let api_key = format!("{project}-key-{}", random_secret()?);
        // A named key, as a team would configure it: the load's sessions are the caller
        // `loadtest`'s (stored `loadtest:<id>`).
        write_secrets(&secrets, &password, "", &format!("loadtest:{api_key}"))?;
        let port = dev_harness::free_port()?;
        let mut all_env: Vec<(String, String)> = vec![
            ("POSTGRES_PASSWORD".into(), password.clone()),
            ("AGENT_PORT".into(), port.to_string()),
            ("AGENT_IMAGE".into(), options.tag.clone()),
            ("FAKE_MODEL_IMAGE".into(), fake_image),
            ("TEST_SECRETS_DIR".into(), secrets.display().to_string()),
        ];
        all_env.extend(standins);
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

/// Checks that the stack's base images are here or can be pulled, and builds the MCP and nginx
/// stand-ins (when the stack runs those services) where their public images cannot be pulled
/// and no `MCP_SERVER_IMAGE` / `NGINX_IMAGE` names another: the environment that selects them.
fn images(
    shell: &Shell,
    options: &crate::tasks::image::ImageOptions,
    mcp: bool,
    nginx: bool,
) -> anyhow::Result<Vec<(String, String)>> {
    let named = |variable: &str, default: &str| {
        std::env::var(variable)
            .ok()
            .filter(|value| !value.is_empty())
            .unwrap_or_else(|| default.to_owned())
    };
    let mut bases = vec![
        ("RUST_IMAGE", options.rust_image.clone()),
        ("RUNTIME_IMAGE", options.runtime_image.clone()),
        (
            "POSTGRES_IMAGE",
            named("POSTGRES_IMAGE", "postgres:16-alpine"),
        ),
        ("REDIS_IMAGE", named("REDIS_IMAGE", "redis:7-alpine")),
    ];
    if mcp {
        bases.push((
            "SLIM_IMAGE",
            named("SLIM_IMAGE", "local/debian:bookworm-slim"),
        ));
    }
    for (variable, image) in &bases {
        ensure!(
            docker::has_image(image),
            "the base image {image} ({variable}) is not on this machine and no registry answers: \
             make local stand-ins with `bash ../shared/offline-images/make-standins.sh`, then \
             `set -a; . ../shared/offline-images/standins.env; set +a`"
        );
    }
    let mut env = Vec::new();
    let standins: [(bool, &str, &str, &str, StandinBuilder); 2] = [
        (
            mcp,
            "MCP_SERVER_IMAGE",
            "mcp/everything:latest",
            standin::MCP_STANDIN,
            standin::mcp_server,
        ),
        (
            nginx,
            "NGINX_IMAGE",
            "nginx:1.27-alpine",
            standin::NGINX_STANDIN,
            |_| standin::nginx(),
        ),
    ];
    for (used, variable, public, local, build) in standins {
        if !used || std::env::var(variable).is_ok_and(|value| !value.is_empty()) {
            continue;
        }
        if docker::has_image(public) {
            continue;
        }
        if !docker::has_image(local) {
            println!("xtask: {public} cannot be pulled; building the stand-in {local}");
            build(shell)?;
        }
        env.push((variable.to_owned(), local.to_owned()));
    }
    Ok(env)
}

type StandinBuilder = fn(&Shell) -> anyhow::Result<()>;

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
