//! `cargo xtask test`: checks the dependency rules of `deny.toml` (cargo-deny), provisions the test
//! tools (a venv and npm packages under the checkout), makes Postgres and Redis available, then
//! runs every test of the workspace.

use anyhow::Context;
use xshell::{Shell, cmd};

pub(crate) fn run(shell: &Shell, cargo_args: &[String]) -> anyhow::Result<()> {
    // Build first, so compile time does not count against the servers' lifetime.
    cmd!(
        shell,
        "cargo test --workspace --all-targets --no-run --locked"
    )
    .run()?;
    // The layering of ARCHITECTURE.md, licences, sources and duplicate versions (`advisories`
    // needs a database from GitHub, not reachable here).
    let deny = dev_harness::cargo_deny()?;
    cmd!(shell, "{deny} deny check bans licenses sources")
        .run()
        .context("cargo deny found a dependency that breaks a rule of deny.toml")?;
    // The Python and npm test tools, made once under target/ (the tests would make them on
    // first use too; here their time shows on its own).
    dev_harness::TestTools::get()?;
    let services = dev_harness::Services::start_or_reuse()?;
    let _database = shell.push_env("DATABASE_URL", &services.database_url);
    let _redis = shell.push_env("REDIS_URL", &services.redis_url);
    let tests = cmd!(
        shell,
        "cargo test --workspace --all-targets --no-fail-fast --locked {cargo_args...}"
    )
    .run()
    .context("the workspace tests failed");
    // Doctests are not part of --all-targets.
    let doctests = cmd!(shell, "cargo test --workspace --doc --locked")
        .run()
        .context("the doctests failed");
    drop(services);
    tests.and(doctests)
}
