//! The `agent-server` binary: parses the command line, loads the configuration, and serves.

use std::process::ExitCode;

use agent_server::cli::{self, Cli, Command, ConfigAction};
use agent_server::{Application, error_chain as chain, telemetry};
use clap::Parser;

/// jemalloc, with background threads that return freed pages to the system within seconds of
/// idleness: glibc kept the peak of a burst of streams for good (docs/performance.md, "Memory").
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve().await,
        Command::Healthcheck(args) => cli::healthcheck(&args).await,
        Command::Migrate => cli::migrate().await,
        Command::Config {
            action: ConfigAction::Check,
        } => cli::config_check(),
    }
}

async fn serve() -> ExitCode {
    let loaded = match cli::load_settings() {
        Ok(loaded) => loaded,
        Err(exit) => return exit,
    };
    let telemetry = match telemetry::init(
        &loaded.settings.log,
        loaded.settings.traces.as_ref(),
        telemetry::LogTarget::Stdout,
    ) {
        Ok(telemetry) => telemetry,
        Err(error) => return cli::fail(&chain(&error)),
    };
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let flush_within = telemetry::flush_window(loaded.settings.server.drain_timeout);
    let application = match Application::build(loaded.settings).await {
        Ok(application) => application,
        Err(error) => {
            tracing::error!(error = %chain(&error), "startup failed");
            telemetry.shutdown(flush_within).await;
            return cli::fail(&chain(&error));
        }
    };
    let outcome = match application.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %chain(&error), "server failed");
            ExitCode::FAILURE
        }
    };
    // The spans of the last requests, within what is left of the drain window.
    telemetry.shutdown(flush_within).await;
    outcome
}
