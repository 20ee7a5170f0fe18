//! Logging and spans: `RUST_LOG` filtering, JSON lines in containers, readable text on a terminal.

use std::io::IsTerminal;

use agent_config::{LogFormat, LogSettings};
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Where log lines go: standard output for the server (the container log stream), standard
/// error for one-shot commands whose standard output is their result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    Stderr,
}

/// Installs the global subscriber. `RUST_LOG` wins over the default filter: `info`, and with
/// ENABLE_TRACING also the debug-level spans of the agent's steps and storage operations.
pub fn init(settings: &LogSettings, target: LogTarget) {
    // The per-operation spans are debug-level: formatting their fields costs every request a few
    // microseconds, worth paying only when their timings are wanted.
    let default = if settings.enable_tracing {
        "info,agent_core=debug,agent_storage=debug"
    } else {
        "info"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let terminal = match target {
        LogTarget::Stdout => std::io::stdout().is_terminal(),
        LogTarget::Stderr => std::io::stderr().is_terminal(),
    };
    let json = match settings.format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !terminal,
    };
    // ENABLE_TRACING adds a line when each span closes, with its busy and idle time.
    let span_events = if settings.enable_tracing {
        FmtSpan::CLOSE
    } else {
        FmtSpan::NONE
    };
    let writer = move || -> Box<dyn std::io::Write> {
        match target {
            LogTarget::Stdout => Box::new(std::io::stdout()),
            LogTarget::Stderr => Box::new(std::io::stderr()),
        }
    };
    let layer = if json {
        tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_span_events(span_events)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(terminal)
            .with_span_events(span_events)
            .boxed()
    };
    // A second initialisation (several apps in one test process) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init();
}
