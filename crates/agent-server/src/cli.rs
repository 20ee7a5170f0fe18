//! The command line: serve (the default), `healthcheck`, `config check`.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// A production-grade LLM agent service.
#[derive(Debug, Parser)]
#[command(name = "agent-server", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (what runs with no subcommand).
    Serve,
    /// Ask the local server whether it is healthy: exit 0 if so, 1 if not. This is what the
    /// container's HEALTHCHECK runs, since the image has no shell and no curl.
    Healthcheck(HealthcheckArgs),
    /// Run the pending database migrations (under an advisory lock) and exit.
    Migrate,
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Debug, clap::Args)]
pub struct HealthcheckArgs {
    /// Ask `/ready` instead of `/health`.
    #[arg(long)]
    pub ready: bool,
    /// Give up after this long (humantime, e.g. "2s").
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// The server's base URL; by default derived from HOST and PORT.
    #[arg(long)]
    pub url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Validate the configuration and print every effective value (secrets redacted) and where
    /// it came from. Exits 1 if the configuration is invalid.
    Check,
}

/// `agent-server healthcheck`.
pub async fn healthcheck(args: &HealthcheckArgs) -> ExitCode {
    let base = match &args.url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => match agent_config::load_server_address(std::env::vars()) {
            Ok((host, port)) => format!("http://{}:{port}", local_host(&host)),
            Err(error) => return fail(&format!("invalid configuration: {error}")),
        },
    };
    let url = format!("{base}/{}", if args.ready { "ready" } else { "health" });
    let client = match reqwest::Client::builder()
        .timeout(args.timeout)
        .no_proxy()
        .build()
    {
        Ok(client) => client,
        Err(error) => return fail(&format!("cannot build an HTTP client: {error}")),
    };
    match client.get(&url).send().await {
        Ok(response) if response.status().is_success() => ExitCode::SUCCESS,
        Ok(response) => fail(&format!("{url} answered {}", response.status())),
        Err(error) => fail(&format!("{url}: {}", crate::error::error_chain(&error))),
    }
}

/// The address to reach a server listening on `host` from the same machine.
fn local_host(host: &str) -> String {
    match host {
        "0.0.0.0" | "localhost" => "127.0.0.1".to_owned(),
        "::" => "[::1]".to_owned(),
        ip if ip.contains(':') => format!("[{ip}]"),
        ip => ip.to_owned(),
    }
}

/// `agent-server migrate`.
pub async fn migrate() -> ExitCode {
    let loaded = match load_settings() {
        Ok(loaded) => loaded,
        Err(exit) => return exit,
    };
    let _ = crate::telemetry::init(
        &loaded.settings.log,
        None,
        crate::telemetry::LogTarget::Stderr,
    );
    match crate::backends::migrate(&loaded.settings.storage).await {
        Ok(applied) => {
            let summary = if applied.is_empty() {
                format!(
                    "the schema is up to date ({})",
                    agent_storage::latest_schema_version()
                )
            } else {
                format!("applied migrations: {}", applied.join(", "))
            };
            let _ = writeln!(std::io::stdout(), "{summary}");
            ExitCode::SUCCESS
        }
        Err(error) => fail(&crate::error::error_chain(&error)),
    }
}

/// `agent-server config check`.
pub fn config_check() -> ExitCode {
    let loaded = match load_settings() {
        Ok(loaded) => loaded,
        Err(exit) => return exit,
    };
    let mut out = std::io::stdout().lock();
    let width = loaded
        .effective
        .iter()
        .map(|value| value.key.len())
        .max()
        .unwrap_or(0);
    let mut lines = vec![format!(
        "configuration is valid (profile: {:?})",
        loaded.settings.profile
    )];
    lines.extend(
        loaded
            .warnings
            .iter()
            .map(|warning| format!("warning: {warning}")),
    );
    lines.extend(
        loaded
            .effective
            .iter()
            .map(|value| format!("{:width$} = {}  # {}", value.key, value.value, value.origin)),
    );
    let settings = &loaded.settings;
    lines.extend(settings.http_tools.iter().map(|tool| {
        format!(
            "http tool {}: {} {} (timeout {}, approval {}, headers: {})",
            tool.name,
            tool.method,
            without_credentials(&tool.url),
            humantime::format_duration(tool.timeout),
            tool.require_approval,
            redacted(&tool.headers)
        )
    }));
    lines.extend(settings.mcp_servers.iter().map(|server| {
        format!(
            "mcp server {}: {} (tools {}__*{}, timeout {}, connect timeout {}, {}, approval {}, \
             headers: {})",
            server.name,
            without_credentials(&server.url),
            server.prefix,
            server
                .tools
                .as_ref()
                .map_or_else(String::new, |tools| format!(" of [{}]", tools.join(", "))),
            humantime::format_duration(server.timeout),
            humantime::format_duration(server.connect_timeout),
            if server.required {
                "required"
            } else {
                "optional"
            },
            server.require_approval,
            redacted(&server.headers)
        )
    }));
    if !settings.builtin_approval.is_never() {
        lines.push(format!(
            "built-in tools: approval {}",
            settings.builtin_approval
        ));
    }
    let default_agent = settings
        .default_agent
        .as_deref()
        .or(settings.agents.first().map(|agent| agent.id.as_str()));
    lines.extend(settings.agents.iter().map(|agent| {
        format!(
            "agent {}{}: models [{}], tools {}, callers {}, context {}",
            agent.id,
            if default_agent == Some(agent.id.as_str()) {
                " (default)"
            } else {
                ""
            },
            agent
                .chain(&settings.model.name)
                .collect::<Vec<_>>()
                .join(" -> "),
            all_or_listed(agent.tools.as_deref()),
            all_or_listed(agent.callers.as_deref()),
            context_policy(&agent.context),
        )
    }));
    lines.extend(settings.models.iter().map(|model| {
        format!(
            "model {}: {} at {} (key: {}, headers: {})",
            model.name,
            model.model,
            without_credentials(&model.base_url),
            match (&model.api_key, model.inline_key) {
                (None, _) => "none",
                (Some(_), true) => "<redacted> (written in the file)",
                (Some(_), false) => "<redacted>",
            },
            redacted(&model.headers)
        )
    }));
    lines.extend(settings.webhooks.iter().map(|webhook| {
        format!(
            "webhook {}: events [{}], callers {}, secrets: {} <redacted>{}",
            without_credentials(&webhook.url),
            webhook.events.join(", "),
            all_or_listed(webhook.callers.as_deref()),
            webhook.secrets.len(),
            if webhook.inline_secret {
                " (written in the file)"
            } else {
                ""
            }
        )
    }));
    if settings.agents.is_empty() {
        lines.push(format!("context {}", context_policy(&settings.context)));
    }
    for line in lines {
        if writeln!(out, "{line}").is_err() {
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// A list as `config check` prints it, `all` when unset.
fn all_or_listed(names: Option<&[String]>) -> String {
    names.map_or_else(
        || "all".to_owned(),
        |names| format!("[{}]", names.join(", ")),
    )
}

/// A URL as `config check` prints it: without a user name or password.
fn without_credentials(url: &agent_config::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

/// Header names with their values redacted (they are secrets), or `none`.
fn redacted(headers: &[(String, secrecy::SecretString)]) -> String {
    if headers.is_empty() {
        return "none".to_owned();
    }
    headers
        .iter()
        .map(|(name, _)| format!("{name}=<redacted>"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Loads the configuration, or prints why it is invalid (one line) and answers the exit code.
pub fn load_settings() -> Result<agent_config::Loaded, ExitCode> {
    agent_config::load().map_err(|error| {
        fail(&format!(
            "invalid configuration: {}",
            crate::error::error_chain(&error)
        ))
    })
}

/// Prints one line to stderr and answers failure.
pub fn fail(message: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "agent-server: {message}");
    ExitCode::FAILURE
}

/// An agent's context policy in one phrase.
fn context_policy(context: &agent_config::ContextSettings) -> String {
    if context.max_input_tokens == 0 {
        return "no budget (an overflow retried once with less history)".to_owned();
    }
    let cut = match context.max_tool_result_tokens {
        0 => String::new(),
        max => format!(", tool results cut at {max} tokens"),
    };
    let compaction = match (context.strategy, &context.summarizer) {
        ("compact", summarizer) => format!(
            ", keeps {} recent turns, summaries by {}",
            context.keep_recent_turns,
            summarizer.as_deref().unwrap_or("the agent's models")
        ),
        _ => String::new(),
    };
    format!(
        "{} at {} tokens{cut}{compaction}",
        context.strategy, context.max_input_tokens
    )
}
