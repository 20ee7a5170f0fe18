//! `cargo xtask browser`: the server's browser pages in a real headless browser. Debian's
//! `chromium` and `chromium-driver`, driven by Selenium (PyPI), run
//! `xtask/browser/check_pages.py` against the release server on Postgres and Redis with keys
//! configured and the standalone fake model (which answers "what is 2+3*4" through the
//! calculator tool): the playground streams a turn with its tool call and result in order, shows
//! its tokens, shows a session again after a reload, asks for a tool call's approval (Approve runs
//! it and the answer streams on), and says what went wrong on 401, 409, 429
//! and 5xx; `/docs` renders the document, "Try it out" and "Authorize" work; the keys stay out of
//! URLs and `localStorage`, no console error, no request off the server's origin. Screenshots of
//! each step are kept in `target/browser/` (CI artifacts).

use std::process::Command;

use anyhow::{Context, bail};
use xshell::Shell;

use dev_harness::Spawned;

use crate::checks::harness::{
    build_release, fake_model, require_tools, server_command, wait_until_ok,
};

const KEY: &str = "browser-key-0123456789";
/// The key of a caller with a daily quota of one token: its second turn is refused (429).
const LIMITED_KEY: &str = "limited-key-0123456789";

pub(crate) fn run(shell: &Shell) -> anyhow::Result<()> {
    require_browser()?;
    let shots = crate::project_root().join("target/browser");
    let bin = build_release(shell)?;
    let services = dev_harness::Services::start_or_reuse()?;
    let (_model, model_port) = fake_model(&bin, 0)?;
    let port = dev_harness::free_port()?;
    let run = std::process::id();
    // The clock needs approval: the playground asks for it (the fake model's "use current_time").
    // Two agents: the playground offers a choice for a new session.
    let config = crate::project_root().join(format!("target/browser-{run}.toml"));
    std::fs::write(
        &config,
        "[builtin_tools]\nrequire_approval = { always = { tool_names = [\"current_time\"] } }\n\n\
         [[agents]]\nid = \"agent\"\ndescription = \"The general agent.\"\n\n\
         [[agents]]\nid = \"support\"\nname = \"Support\"\ninstructions = \"You are support.\"\n\
         tools = [\"calculator\"]\n",
    )?;
    let _server = Spawned::start(
        server_command(&bin, port, model_port)
            .env("AGENT_PROFILE", "dev")
            .env("AGENT_CONFIG", &config)
            .env("DATABASE_URL", &services.database_url)
            .env("REDIS_URL", &services.redis_url)
            .env("AGENT_STORAGE__REDIS_KEY_PREFIX", format!("browser-{run}:"))
            // The limited caller's name is new in each run: its quota is counted per day in
            // Postgres, which a local run may reuse.
            .env(
                "AGENT_API_KEYS",
                format!("browser:{KEY},limited-{run}:{LIMITED_KEY}"),
            )
            .env("AGENT_API__DAILY_TOKEN_QUOTAS", format!("limited-{run}:1"))
            // A turn on a busy session gives up (409) after a second.
            .env("AGENT_API__LOCK_WAIT", "1s"),
    )?;
    wait_until_ok(port, "/ready")?;
    let checked = page_checks(
        &format!("http://127.0.0.1:{port}"),
        KEY,
        &[
            ("AGENT_LIMITED_KEY", LIMITED_KEY.to_owned()),
            ("MODEL_URL", format!("http://127.0.0.1:{model_port}")),
        ],
        &shots,
    );
    let _ = std::fs::remove_file(&config);
    checked
}

/// Chromium and its driver (or an error naming what to install), and the provisioned Python
/// with Selenium.
fn require_browser() -> anyhow::Result<std::path::PathBuf> {
    require_tools(&[
        ("chromium", "chromium"),
        ("chromedriver", "chromium-driver"),
    ])?;
    Ok(dev_harness::TestTools::get()?.python())
}

/// Runs `xtask/browser/check_pages.py` against `url` with `key` (and `env`: `CHECKS=proxy` for a
/// server behind a proxy), its screenshots in `shots`.
pub(crate) fn page_checks(
    url: &str,
    key: &str,
    env: &[(&str, String)],
    shots: &std::path::Path,
) -> anyhow::Result<()> {
    let python = require_browser()?;
    let _ = std::fs::remove_dir_all(shots);
    println!(
        "xtask: the pages at {url} in headless Chromium; screenshots in {}",
        shots.display()
    );
    let status = Command::new(python)
        .arg(crate::project_root().join("xtask/browser/check_pages.py"))
        .env("AGENT_URL", url)
        .env("AGENT_KEY", key)
        .env("SHOTS_DIR", shots)
        .envs(env.iter().map(|(name, value)| (name, value)))
        // Selenium must not look for a driver to download: chromedriver is Debian's.
        .env("SE_OFFLINE", "true")
        .status()
        .context("running the browser checks")?;
    if !status.success() {
        bail!(
            "the browser checks failed ({status}); screenshots in {}",
            shots.display()
        );
    }
    Ok(())
}
