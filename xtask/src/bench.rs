//! `cargo xtask bench-storage`: the storage criterion benchmarks against real Postgres and
//! Redis (started like `cargo xtask test` does), with the in-memory stores as the baseline.

use xshell::{Shell, cmd};

pub(crate) fn storage(shell: &Shell) -> anyhow::Result<()> {
    cmd!(
        shell,
        "cargo bench --package agent-storage --bench storage --no-run --locked"
    )
    .run()?;
    let services = crate::services::start()?;
    let _database = shell.push_env("DATABASE_URL", &services.database_url);
    let _redis = shell.push_env("REDIS_URL", &services.redis_url);
    cmd!(
        shell,
        "cargo bench --package agent-storage --bench storage --locked"
    )
    .run()?;
    Ok(())
}
