//! `cargo xtask browser`: the server's browser pages in a real headless browser. Debian's
//! `chromium` and `chromium-driver`, driven by Selenium (PyPI), run
//! `xtask/browser/check_pages.py` against the release server on Postgres and Redis with a key
//! configured: `/docs` renders the document, "Try it out" and "Authorize" work, the key stays out
//! of URLs and storage, no console error, no request off the server's origin. Screenshots of each
//! step are kept in `target/browser/` (CI artifacts).

use std::process::Command;

use anyhow::{Context, bail};
use xshell::Shell;

use dev_harness::Spawned;

use crate::checks::harness::{
    build_release, fake_model, require_tools, server_command, wait_until_ok,
};

const KEY: &str = "browser-key-0123456789";

pub(crate) fn run(shell: &Shell) -> anyhow::Result<()> {
    require_tools(&[
        ("chromium", "chromium"),
        ("chromedriver", "chromium-driver"),
    ])?;
    let selenium = Command::new("python3")
        .args(["-c", "import selenium"])
        .status()
        .is_ok_and(|status| status.success());
    if !selenium {
        bail!("Selenium is not installed: python3 -m pip install 'selenium>=4.30,<5'");
    }
    let root = crate::project_root();
    let shots = root.join("target/browser");
    let _ = std::fs::remove_dir_all(&shots);
    let bin = build_release(shell)?;
    let services = dev_harness::Services::start_or_reuse()?;
    let (_model, model_port) = fake_model(&bin, 0)?;
    let port = dev_harness::free_port()?;
    let _server = Spawned::start(
        server_command(&bin, port, model_port)
            .env("AGENT_PROFILE", "dev")
            .env("DATABASE_URL", &services.database_url)
            .env("REDIS_URL", &services.redis_url)
            .env(
                "AGENT_STORAGE__REDIS_KEY_PREFIX",
                format!("browser-{}:", std::process::id()),
            )
            .env("AGENT_API_KEYS", format!("browser:{KEY}")),
    )?;
    wait_until_ok(port, "/ready")?;
    println!(
        "xtask: the pages in headless Chromium; screenshots in {}",
        shots.display()
    );
    let status = Command::new("python3")
        .arg(root.join("xtask/browser/check_pages.py"))
        .env("AGENT_URL", format!("http://127.0.0.1:{port}"))
        .env("AGENT_KEY", KEY)
        .env("SHOTS_DIR", &shots)
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
