//! The table of every configuration key: its path, the tutorial's environment names for it, and
//! whether it is a secret. Loading, `_FILE` support, unknown-variable warnings and `config check`
//! are all driven by this one table.

/// One configuration key.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// Dotted path in the TOML file, e.g. `server.port`.
    pub path: &'static str,
    /// Unprefixed environment names kept from the Python tutorial, e.g. `PORT`.
    pub aliases: &'static [&'static str],
    /// Secrets accept `<NAME>_FILE` and are never printed.
    pub secret: bool,
}

impl Key {
    const fn plain(path: &'static str, aliases: &'static [&'static str]) -> Self {
        Self {
            path,
            aliases,
            secret: false,
        }
    }

    const fn secret(path: &'static str, aliases: &'static [&'static str]) -> Self {
        Self {
            path,
            aliases,
            secret: true,
        }
    }

    /// The prefixed environment name: `AGENT_` + path in upper case with `__` for nesting.
    pub fn prefixed_env_name(&self) -> String {
        format!(
            "AGENT_{}",
            self.path.replace('.', "__").to_ascii_uppercase()
        )
    }

    /// Every environment name for this key, the prefixed one first (it wins over an alias).
    pub fn env_names(&self) -> Vec<String> {
        let mut names = vec![self.prefixed_env_name()];
        names.extend(self.aliases.iter().map(|alias| (*alias).to_owned()));
        names
    }

    /// The name to show a user for this key: the tutorial's name if there is one.
    pub fn display_name(&self) -> String {
        self.aliases
            .first()
            .map(|alias| (*alias).to_owned())
            .unwrap_or_else(|| self.prefixed_env_name())
    }
}

/// Every key the service understands.
pub const KEYS: &[Key] = &[
    Key::plain("profile", &[]),
    Key::plain("log_format", &[]),
    Key::plain("enable_tracing", &["ENABLE_TRACING"]),
    Key::plain("enable_streaming", &["ENABLE_STREAMING"]),
    Key::secret("api_keys", &[]),
    Key::plain("api.max_body_bytes", &[]),
    Key::plain("api.max_message_chars", &[]),
    Key::plain("api.lock_wait", &[]),
    Key::plain("api.idempotency_retention", &[]),
    Key::plain("api.sse_keepalive", &[]),
    Key::plain("api.metrics_require_auth", &[]),
    Key::plain("api.trust_forwarded_for", &[]),
    Key::plain("rate_limit.requests", &[]),
    Key::plain("rate_limit.window", &[]),
    Key::plain("server.host", &["HOST"]),
    Key::plain("server.port", &["PORT"]),
    Key::plain("server.workers", &["WORKERS"]),
    Key::plain("server.shutdown_delay", &[]),
    Key::plain("server.drain_timeout", &[]),
    Key::plain("model.provider", &[]),
    Key::plain("model.base_url", &["OPENAI_BASE_URL"]),
    Key::secret("model.api_key", &["OPENAI_API_KEY"]),
    Key::plain("model.name", &["MODEL_NAME"]),
    Key::plain("model.temperature", &["TEMPERATURE"]),
    Key::plain("model.max_tokens", &["MAX_TOKENS"]),
    Key::plain("model.request_timeout", &[]),
    Key::plain("model.max_attempts", &[]),
    Key::plain("model.retry_base_delay", &[]),
    Key::plain("model.retry_max_delay", &[]),
    Key::plain("model.retry_budget", &[]),
    Key::plain("turn.max_steps", &[]),
    Key::plain("turn.max_parallel_tools", &[]),
    Key::plain("turn.turn_token_budget", &[]),
    Key::plain("turn.session_token_budget", &[]),
    Key::plain("turn.turn_deadline", &[]),
    Key::plain("turn.tool_timeout", &[]),
    Key::plain("turn.history_window", &[]),
    Key::plain("turn.system_prompt", &[]),
    Key::plain("http_tool_defaults.method", &[]),
    Key::plain("http_tool_defaults.timeout", &[]),
    Key::plain("http_tool_defaults.max_response_bytes", &[]),
    Key::secret("storage.database_url", &["DATABASE_URL"]),
    Key::secret("storage.redis_url", &["REDIS_URL"]),
    Key::plain("storage.pool_size", &[]),
    Key::plain("storage.connect_timeout", &[]),
    Key::plain("storage.statement_timeout", &[]),
    Key::plain("storage.run_migrations", &[]),
    Key::plain("storage.startup_timeout", &[]),
    Key::plain("storage.redis_pool_size", &[]),
    Key::plain("storage.redis_timeout", &[]),
    Key::plain("storage.redis_key_prefix", &[]),
    Key::plain("health.check_timeout", &[]),
    Key::plain("health.cache_ttl", &[]),
];

/// Variables of the deployment tooling (Compose, `cargo xtask`), not of the service; they may
/// share the prefix without being reported as unknown.
pub(crate) const DEPLOYMENT_VARIABLES: &[&str] = &[
    "POSTGRES_PASSWORD",
    "AGENT_IMAGE",
    "POSTGRES_IMAGE",
    "REDIS_IMAGE",
    "NGINX_IMAGE",
    "RUST_IMAGE",
    "RUNTIME_IMAGE",
    "AGENT_BIND_ADDRESS",
    "AGENT_PORT",
    "NGINX_PORT",
];

/// The variable naming the optional TOML file.
pub(crate) const CONFIG_FILE_VARIABLE: &str = "AGENT_CONFIG";

pub(crate) fn find(path: &str) -> Option<&'static Key> {
    KEYS.iter().find(|key| key.path == path)
}
