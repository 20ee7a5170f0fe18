//! `cargo xtask`: the project's automation, one binary with subcommands.

// Printing results is what this binary is for.
#![allow(clippy::print_stdout)]

mod bench;
mod services;
mod startup_time;
mod test;
#[cfg(test)]
mod tidy;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "agent-server project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every test of the workspace (what CI runs), with Postgres and Redis: those named by
    /// DATABASE_URL and REDIS_URL if they answer, else throwaway servers started and stopped here.
    Test {
        /// Extra arguments passed to `cargo test` (after `--`).
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// Storage benchmarks (criterion) against real Postgres and Redis, memory as the baseline.
    BenchStorage,
    /// HTTP benchmark of the release server against a bare actix-web baseline (needs wrk).
    Bench {
        /// Seconds each scenario runs.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Measure process start to the first 200 on /health (median of several runs).
    StartupTime {
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Measure the release build instead of the debug build.
        #[arg(long)]
        release: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let shell = xshell::Shell::new()?;
    shell.change_dir(project_root());
    match cli.command {
        Command::Test { cargo_args } => test::run(&shell, &cargo_args),
        Command::StartupTime { runs, release } => startup_time::run(&shell, runs, release),
        Command::BenchStorage => bench::storage(&shell),
        Command::Bench { seconds } => bench::http(&shell, seconds),
    }
}

/// The workspace root: the parent of this crate's directory.
fn project_root() -> std::path::PathBuf {
    let manifest_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}
