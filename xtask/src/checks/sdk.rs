//! `cargo xtask sdk`: the official OpenAI SDKs, unchanged, against the release server's
//! OpenAI-compatible API on Postgres and Redis: the Python SDK (`openai` 3.x from PyPI) runs
//! `xtask/sdk/python/check_openai.py`, the Node SDK (`openai` 6.x from npm, installed in
//! `xtask/sdk/node`) runs `xtask/sdk/node/check_openai.mjs`. Each script makes its own checks
//! (models, plain and streamed chat completions, a remembered session, responses plain, streamed,
//! continued and read back, background ones polled, cancelled and their streams resumed, their
//! webhooks verified with the SDK and the `standardwebhooks` package, each error class) and exits
//! non-zero on the first failure. A second server allowing two requests a minute gives the
//! scripts a rate limit to hit. Then the agent SDKs: `xtask/sdk/python/check_agent_sdks.py` (the
//! OpenAI Agents SDK, pydantic-ai, LangChain, and the Python SDK's structured output and
//! client-kept Responses history) and `xtask/sdk/node/check_ai_sdk.mjs` (the Vercel AI SDK), with
//! a third server on the offline model for structured output. Python packages come from the
//! provisioned venv, npm packages from xtask/sdk/node.

use std::process::Command;

use anyhow::{Context, bail};
use xshell::Shell;

use dev_harness::Spawned;

use crate::checks::harness::{
    build_release, fake_model, psql, require_tools, server_command, wait_until_ok,
};

/// Caller `sdk`'s key, and caller `thrifty`'s, whose daily quota one turn uses up.
const KEY: &str = "sdk-key-0123456789";
const QUOTA_KEY: &str = "thrifty-key-0123456789";
/// The configuration of the server of several agents.
const AGENTS: &str = r#"
default_agent = "support"

[[agents]]
id = "support"
instructions = "You are support."
tools = ["calculator"]
context = { max_input_tokens = 4000 }

[[agents]]
id = "research"
instructions = "You are research."
tools = ["current_*"]
callers = ["sdk"]
"#;

/// The webhooks' signing secret (`whsec_` and base64).
const WEBHOOK_SECRET: &str = "whsec_c2RrIGNoZWNrIHdlYmhvb2sgc2VjcmV0";

pub(crate) fn run(shell: &Shell) -> anyhow::Result<()> {
    let root = crate::project_root();
    let python = root.join("xtask/sdk/python/check_openai.py");
    let node = root.join("xtask/sdk/node");
    require_tools(&[("psql", "postgresql-client"), ("node", "nodejs")])?;
    let tools = dev_harness::TestTools::get()?;
    let bin = build_release(shell)?;
    let services = dev_harness::Services::start_or_reuse()?;
    // A database of this run's own: the sessions and usage of earlier runs stay out of it.
    let name = format!("agent_sdk_{}", std::process::id());
    psql(
        &services.database_url,
        &format!("DROP DATABASE IF EXISTS {name}"),
    )?;
    psql(&services.database_url, &format!("CREATE DATABASE {name}"))?;
    let database = match services.database_url.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => bail!("cannot read the database URL {}", services.database_url),
    };
    let (_model, model_port) = fake_model(&bin, 0)?;
    let keys = format!("sdk:{KEY},thrifty:{QUOTA_KEY}");
    // The Python script listens for the webhooks of its background responses there.
    let webhook_port = dev_harness::free_port()?;
    let config = root.join(format!("target/sdk-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!(
            "[[webhooks]]\nurl = \"http://127.0.0.1:{webhook_port}/hooks\"\nsecret = \"{WEBHOOK_SECRET}\"\n\n\
             [builtin_tools]\nrequire_approval = {{ always = {{ tool_names = [\"current_time\"] }} }}\n"
        ),
    )?;
    let start = |rate_limit: &str| -> anyhow::Result<(Spawned, u16)> {
        let port = dev_harness::free_port()?;
        let server = Spawned::start(
            server_command(&bin, port, model_port)
                .env("DATABASE_URL", &database)
                .env("REDIS_URL", &services.redis_url)
                // Each server counts its own rate limits.
                .env(
                    "AGENT_STORAGE__REDIS_KEY_PREFIX",
                    format!("sdk-{}-{port}:", std::process::id()),
                )
                .env("AGENT_API_KEYS", &keys)
                .env("AGENT_CONFIG", &config)
                .env("AGENT_API__DAILY_TOKEN_QUOTAS", "thrifty:1")
                .env("AGENT_RATE_LIMIT__REQUESTS", rate_limit)
                .env("AGENT_MODEL__MAX_ATTEMPTS", "1"),
        )?;
        wait_until_ok(port, "/ready")?;
        Ok((server, port))
    };
    let (_server, port) = start("1000000")?;
    // Two agents: caller `sdk` may use both, `thrifty` only `support`.
    let agents_config = root.join(format!("target/sdk-agents-{}.toml", std::process::id()));
    std::fs::write(&agents_config, AGENTS)?;
    let agents_port = dev_harness::free_port()?;
    let _agents = Spawned::start(
        server_command(&bin, agents_port, model_port)
            .env("AGENT_API_KEYS", &keys)
            .env("AGENT_CONFIG", &agents_config),
    )?;
    wait_until_ok(agents_port, "/ready")?;
    let (_limited, limited_port) = start("2")?;
    // The built-in offline model (no model server, memory storage): structured output must
    // work with it too.
    let offline_port = dev_harness::free_port()?;
    let mut offline = server_command(&bin, offline_port, model_port);
    offline
        .env_remove("OPENAI_BASE_URL")
        .env("AGENT_API_KEYS", &keys);
    let _offline = Spawned::start(&mut offline)?;
    wait_until_ok(offline_port, "/ready")?;
    let environment = [
        ("AGENT_URL", format!("http://127.0.0.1:{port}")),
        ("AGENT_KEY", KEY.to_owned()),
        ("AGENT_QUOTA_KEY", QUOTA_KEY.to_owned()),
        (
            "AGENT_LIMITED_URL",
            format!("http://127.0.0.1:{limited_port}"),
        ),
        ("FAKE_MODEL_URL", format!("http://127.0.0.1:{model_port}")),
        ("WEBHOOK_PORT", webhook_port.to_string()),
        ("WEBHOOK_SECRET", WEBHOOK_SECRET.to_owned()),
        (
            "AGENT_AGENTS_URL",
            format!("http://127.0.0.1:{agents_port}"),
        ),
        (
            "AGENT_OFFLINE_URL",
            format!("http://127.0.0.1:{offline_port}"),
        ),
    ];
    let scripts = [
        ("python", {
            let mut command = Command::new(tools.python());
            command.arg(&python);
            command
        }),
        ("node", {
            let mut command = Command::new("node");
            command.arg("check_openai.mjs").current_dir(&node);
            command
        }),
        ("agent (OpenAI Agents SDK, pydantic-ai, LangChain)", {
            let mut command = Command::new(tools.python());
            command.arg(root.join("xtask/sdk/python/check_agent_sdks.py"));
            command
        }),
        ("Vercel AI", {
            let mut command = Command::new("node");
            command.arg("check_ai_sdk.mjs").current_dir(&node);
            command
        }),
    ];
    for (name, mut command) in scripts {
        println!("xtask: the {name} SDK against the server");
        let status = command
            .envs(environment.iter().map(|(key, value)| (*key, value)))
            .status()
            .with_context(|| format!("running the {name} SDK checks"))?;
        if !status.success() {
            bail!("the {name} SDK checks failed ({status})");
        }
    }
    let _ = std::fs::remove_file(&config);
    let _ = std::fs::remove_file(&agents_config);
    Ok(())
}
