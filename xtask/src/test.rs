//! `cargo xtask test`: builds, then runs every test of the workspace.

use anyhow::Context;
use xshell::{Shell, cmd};

pub(crate) fn run(shell: &Shell, cargo_args: &[String]) -> anyhow::Result<()> {
    cmd!(
        shell,
        "cargo test --workspace --all-targets --no-fail-fast {cargo_args...}"
    )
    .run()
    .context("the workspace tests failed")?;
    // Doctests are not part of --all-targets.
    cmd!(shell, "cargo test --workspace --doc")
        .run()
        .context("the doctests failed")?;
    Ok(())
}
