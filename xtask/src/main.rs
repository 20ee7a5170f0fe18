//! `cargo xtask`: the project's automation, one binary with subcommands.

// Printing results is what this binary is for.
#![allow(clippy::print_stdout)]

mod checks;
mod tasks;
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
        /// Only one part: `streams` (8,000 long streams, memory), or the rows whose scenario
        /// contains this text (e.g. `continuing`, `realistic`).
        #[arg(long)]
        only: Option<String>,
        /// Another build to alternate with, row by row: a git revision (e.g. `HEAD~1`, built in
        /// target/bench-baseline) or a directory holding its `agent-server`.
        #[arg(long)]
        baseline: Option<String>,
    },
    /// Steady multi-turn load on the release server with Postgres and Redis; fails when memory,
    /// descriptors or connections grow past their bounds after the warm-up.
    Soak {
        /// Minutes the load runs.
        #[arg(long, default_value_t = 2)]
        minutes: u64,
    },
    /// The release server through storms: Redis down under load (rate limits off and on), more
    /// streaming clients than descriptors, an overload at twice the turn limit, and the log
    /// volume of a model outage; asserts bounded memory, live probes, nothing lost, resumption.
    Storm {
        /// Seconds each storm lasts (the descriptors one at most 30).
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Run only the scenarios whose name contains this.
        #[arg(long)]
        only: Option<String>,
    },
    /// The official OpenAI SDKs (Python from PyPI, Node from npm) against the release server's
    /// OpenAI-compatible API on Postgres and Redis.
    Sdk,
    /// The server's browser pages in headless Chromium (Debian's, driven by Selenium from PyPI):
    /// the playground's turns, sessions and error messages, `/docs`'s "Try it out" and
    /// "Authorize", no console error, no request off the origin; screenshots in target/browser.
    Browser,
    /// The release server's traces over OTLP/HTTP to a receiver decoding the protocol's protobuf:
    /// one trace per turn with the GenAI attributes, flushed at SIGTERM, dropped and counted with
    /// the collector gone.
    Traces,
    /// Build the container image from docker/Dockerfile (hermetic: vendored dependencies).
    Image {
        #[arg(long)]
        tag: Option<String>,
        /// The builder base image (default $RUST_IMAGE, else rust:1.95-slim-bookworm).
        #[arg(long)]
        rust_image: Option<String>,
        /// The runtime base image (default $RUNTIME_IMAGE, else gcr.io/distroless/cc-debian12:nonroot).
        #[arg(long)]
        runtime_image: Option<String>,
    },
    /// Start the Compose stack (creates .env and .secrets/ when missing) and wait until healthy.
    Up {
        /// Rebuild the image first.
        #[arg(long)]
        build: bool,
        /// Also start the nginx reverse proxy (the `nginx` profile).
        #[arg(long)]
        nginx: bool,
        /// Also start an MCP server the agent takes tools from (docker/compose.mcp.yaml).
        #[arg(long)]
        mcp: bool,
    },
    /// Stop and remove the stack's containers.
    Down {
        /// Also remove its volumes (all stored data).
        #[arg(long)]
        volumes: bool,
    },
    /// Show the stack's logs.
    Logs { service: Option<String> },
    /// List the stack's containers.
    Ps,
    /// Build the image, run the stack with the fake model, check it end to end, tear it down.
    E2e,
    /// Break the running stack on purpose under load (Redis and Postgres stopped, model faults,
    /// SIGTERM and SIGKILL of the agent, the MCP server) and check that no acknowledged turn was lost.
    Chaos {
        /// Run only the scenarios whose name contains this.
        #[arg(long)]
        only: Option<String>,
    },
    /// Three agent replicas behind nginx sharing Postgres and Redis: shared history, serialised
    /// concurrent turns, a replica killed under load, a rate limit across replicas.
    Replicas,
    /// Build a local nginx stand-in (Debian's nginx) for machines with no registry.
    NginxStandin,
    /// Build a local stand-in for the mcp/everything image (the reference MCP server from npm).
    McpStandin,
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
        Command::Test { cargo_args } => tasks::test::run(&shell, &cargo_args),
        Command::StartupTime { runs, release } => checks::startup_time::run(&shell, runs, release),
        Command::BenchStorage => checks::bench::storage(&shell),
        Command::Up { build, nginx, mcp } => tasks::compose::up(&shell, build, nginx, mcp),
        Command::Down { volumes } => tasks::compose::down(volumes),
        Command::Logs { service } => tasks::compose::logs(service),
        Command::Ps => tasks::compose::ps(),
        Command::E2e => checks::e2e::run(&shell),
        Command::Chaos { only } => checks::chaos::run(&shell, only),
        Command::Replicas => checks::replicas::run(&shell),
        Command::NginxStandin => tasks::standin::nginx(),
        Command::McpStandin => tasks::standin::mcp_server(&shell),
        Command::Image {
            tag,
            rust_image,
            runtime_image,
        } => tasks::image::build(
            &shell,
            &tasks::image::ImageOptions::new(tag, rust_image, runtime_image),
        ),
        Command::Bench {
            seconds,
            only,
            baseline,
        } => checks::bench::http(&shell, seconds, only.as_deref(), baseline.as_deref()),
        Command::Soak { minutes } => checks::soak::run(&shell, minutes),
        Command::Sdk => checks::sdk::run(&shell),
        Command::Browser => checks::browser::run(&shell),
        Command::Traces => checks::traces::run(&shell),
        Command::Storm { seconds, only } => checks::storm::run(&shell, seconds, only),
    }
}

/// The workspace root: the parent of this crate's directory.
fn project_root() -> std::path::PathBuf {
    let manifest_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}
