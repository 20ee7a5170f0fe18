//! Loading: merge the layers with figment, then validate every key into [`Settings`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use figment::providers::{Format, Toml};
use figment::value::{Dict, Num, Value};
use figment::{Figment, Source};
use secrecy::SecretString;
use url::Url;

use crate::env::EnvValues;
use crate::error::ConfigError;
use crate::keys::{self, CONFIG_FILE_VARIABLE, KEYS};
use crate::settings::{
    ApiSettings, HealthSettings, LogFormat, LogSettings, ModelProvider, ModelSettings, Profile,
    ServerSettings, Settings, StorageSettings, TurnSettings,
};

const DEFAULTS: &str = include_str!("defaults.toml");

/// The result of loading: the settings, and what the caller should tell the operator.
#[derive(Debug)]
pub struct Loaded {
    pub settings: Settings,
    /// Things that did not stop startup but should be logged (unknown variables or keys).
    pub warnings: Vec<String>,
    /// Every key with its effective value (secrets redacted) and where it came from.
    pub effective: Vec<EffectiveValue>,
}

/// One line of `agent-server config check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveValue {
    pub key: &'static str,
    /// The value as text; `[redacted]` for a set secret, `(unset)` when absent.
    pub value: String,
    /// The variable, the file, or `default`.
    pub origin: String,
}

/// Loads the settings from the process environment (and `AGENT_CONFIG`, if set).
pub fn load() -> Result<Loaded, ConfigError> {
    load_from(std::env::vars())
}

/// Loads the settings from the given variables instead of the process environment.
pub fn load_from(vars: impl IntoIterator<Item = (String, String)>) -> Result<Loaded, ConfigError> {
    let layers = Layers::new(vars.into_iter().collect())?;
    let settings = layers.settings()?;
    let effective = layers.effective();
    Ok(Loaded {
        settings,
        warnings: layers.warnings,
        effective,
    })
}

/// Loads only the listen address, for `agent-server healthcheck`, which must work even where
/// other settings (secrets it cannot read, say) would not validate.
pub fn load_server_address(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<(String, u16), ConfigError> {
    let layers = Layers::new(vars.into_iter().collect())?;
    Ok((
        layers.host()?,
        layers.parse("server.port", "a port number (0-65535)")?,
    ))
}

/// The merged layers, with enough bookkeeping to name where each value came from.
struct Layers {
    merged: Dict,
    figment: Figment,
    /// The TOML file, if one was given.
    file: Option<String>,
    env: EnvValues,
    warnings: Vec<String>,
}

impl Layers {
    fn new(vars: BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let env = EnvValues::collect(&vars)?;
        let mut warnings: Vec<String> = env
            .unknown
            .iter()
            .map(|name| format!("unknown configuration variable {name} is ignored"))
            .collect();
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        if let Some(path) = vars
            .get(CONFIG_FILE_VARIABLE)
            .filter(|path| !path.is_empty())
        {
            let file_error = |source: figment::Error| ConfigError::File {
                path: path.clone(),
                source: Box::new(source),
            };
            if !std::path::Path::new(path).is_file() {
                return Err(file_error(figment::Error::from("no such file".to_owned())));
            }
            let file = Toml::file(path);
            let data = figment::Provider::data(&file).map_err(file_error)?;
            for table in data.values() {
                warnings.extend(
                    unknown_file_keys(table, "")
                        .into_iter()
                        .map(|key| format!("unknown configuration key {key} in {path} is ignored")),
                );
            }
            figment = figment.merge(file);
        }
        figment = figment.merge(&env);
        let merged: Dict = figment.extract().map_err(|source| ConfigError::File {
            path: vars.get(CONFIG_FILE_VARIABLE).cloned().unwrap_or_default(),
            source: Box::new(source),
        })?;
        let file = vars
            .get(CONFIG_FILE_VARIABLE)
            .filter(|path| !path.is_empty())
            .cloned();
        Ok(Self {
            merged,
            figment,
            file,
            env,
            warnings,
        })
    }

    fn settings(&self) -> Result<Settings, ConfigError> {
        let profile = match self.text("profile").to_ascii_lowercase().as_str() {
            "dev" | "development" => Profile::Dev,
            "production" | "prod" => Profile::Production,
            _ => return Err(self.invalid("profile", "expected \"dev\" or \"production\"")),
        };
        let format = match self.text("log_format").to_ascii_lowercase().as_str() {
            "auto" => LogFormat::Auto,
            "json" => LogFormat::Json,
            "pretty" | "text" => LogFormat::Pretty,
            _ => return Err(self.invalid("log_format", "expected auto, json or pretty")),
        };
        let workers = self.int_in("server.workers", 0, 1024)?;
        let settings = Settings {
            profile,
            log: LogSettings {
                format,
                enable_tracing: self.boolean("enable_tracing")?,
            },
            enable_streaming: self.boolean("enable_streaming")?,
            api_keys: self.api_keys()?,
            api: ApiSettings {
                max_body_bytes: self.int_in("api.max_body_bytes", 1024, 64 << 20)? as usize,
                max_message_chars: self.int_in("api.max_message_chars", 1, 1 << 20)? as usize,
                lock_wait: self.duration("api.lock_wait", 0, 600)?,
                idempotency_retention: self.duration(
                    "api.idempotency_retention",
                    1000,
                    30 * 24 * 3600,
                )?,
                sse_keepalive: self.duration("api.sse_keepalive", 100, 600)?,
                metrics_require_auth: self.boolean("api.metrics_require_auth")?,
                trust_forwarded_for: self.boolean("api.trust_forwarded_for")?,
                rate_limit_requests: self.int_in("rate_limit.requests", 0, 1_000_000_000)? as u32,
                rate_limit_window: self.duration("rate_limit.window", 1, 24 * 3600)?,
            },
            server: ServerSettings {
                host: self.host()?,
                port: self.parse("server.port", "a port number (0-65535)")?,
                workers: if workers == 0 {
                    std::thread::available_parallelism().map_or(1, |count| count.get())
                } else {
                    workers as usize
                },
                shutdown_delay: self.duration("server.shutdown_delay", 0, 60)?,
                drain_timeout: self.duration("server.drain_timeout", 0, 600)?,
            },
            model: self.model(profile)?,
            turn: TurnSettings {
                max_steps: self.int_in("turn.max_steps", 1, 100)? as usize,
                max_parallel_tools: self.int_in("turn.max_parallel_tools", 1, 64)? as usize,
                turn_token_budget: self.int_in("turn.turn_token_budget", 1, u64::MAX / 4)?,
                session_token_budget: self.int_in("turn.session_token_budget", 1, u64::MAX / 4)?,
                turn_deadline: self.duration("turn.turn_deadline", 1, 3600)?,
                tool_timeout: self.duration("turn.tool_timeout", 1, 600)?,
                history_window: self.int_in("turn.history_window", 0, 1000)? as usize,
                system_prompt: self.text("turn.system_prompt"),
            },
            http_tools: crate::http_tools::load(
                &self.figment,
                self.file.as_deref().unwrap_or_default(),
                crate::http_tools::Defaults {
                    method: self.text("http_tool_defaults.method"),
                    timeout: self.duration("http_tool_defaults.timeout", 1, 600)?,
                    max_response_bytes: self.int_in(
                        "http_tool_defaults.max_response_bytes",
                        1,
                        64 << 20,
                    )? as usize,
                },
            )?,
            storage: StorageSettings {
                database_url: self
                    .url_secret("storage.database_url", &["postgres", "postgresql"])?,
                redis_url: self.url_secret("storage.redis_url", &["redis", "rediss"])?,
                pool_size: self.int_in("storage.pool_size", 1, 1000)? as usize,
                connect_timeout: self.duration("storage.connect_timeout", 1, 300)?,
                statement_timeout: self.duration("storage.statement_timeout", 1, 3600)?,
                run_migrations: self.boolean("storage.run_migrations")?,
                startup_timeout: self.duration("storage.startup_timeout", 0, 3600)?,
                redis_pool_size: self.int_in("storage.redis_pool_size", 1, 1000)? as usize,
                redis_timeout: self.duration("storage.redis_timeout", 1, 300)?,
                redis_key_prefix: self.text("storage.redis_key_prefix"),
            },
            health: HealthSettings {
                check_timeout: self.duration("health.check_timeout", 1, 60)?,
                cache_ttl: self.duration("health.cache_ttl", 0, 60)?,
            },
        };
        if profile == Profile::Production {
            let storage = &settings.storage;
            if storage.database_url.is_none() {
                return Err(self.missing("storage.database_url", "conversations need Postgres"));
            }
            if storage.redis_url.is_none() {
                return Err(self.missing("storage.redis_url", "locks and rate limits need Redis"));
            }
        }
        Ok(settings)
    }

    fn model(&self, profile: Profile) -> Result<ModelSettings, ConfigError> {
        let api_key = self.secret("model.api_key")?;
        let base_url_set = self.env.variable_for("model.base_url").is_some()
            || self.file_origin("model.base_url").is_some();
        let provider = match self.text("model.provider").to_ascii_lowercase().as_str() {
            "offline" => "offline",
            "openai" => "openai",
            "auto" if api_key.is_some() || base_url_set => "openai",
            "auto" => "offline",
            _ => return Err(self.invalid("model.provider", "expected auto, openai or offline")),
        };
        let provider = match (provider, profile) {
            ("offline", Profile::Production) => {
                return Err(self.missing(
                    "model.api_key",
                    "set OPENAI_API_KEY and/or OPENAI_BASE_URL (the offline model is for dev only)",
                ));
            }
            ("offline", Profile::Dev) => ModelProvider::Offline,
            _ => {
                let text = self.text("model.base_url");
                let base_url = Url::parse(&text)
                    .ok()
                    .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
                    .ok_or_else(|| {
                        self.invalid("model.base_url", &format!("'{text}' is not an http(s) URL"))
                    })?;
                ModelProvider::OpenAiCompatible { base_url, api_key }
            }
        };
        let name = self.text("model.name");
        if name.trim().is_empty() {
            return Err(self.invalid("model.name", "must not be empty"));
        }
        let temperature: f32 = self.parse("model.temperature", "a number from 0 to 2")?;
        if !(0.0..=2.0).contains(&temperature) {
            return Err(self.invalid("model.temperature", "must be a number from 0 to 2"));
        }
        Ok(ModelSettings {
            provider,
            name,
            temperature,
            max_tokens: self.int_in("model.max_tokens", 1, 1_000_000)? as u32,
            request_timeout: self.duration("model.request_timeout", 1, 3600)?,
            max_attempts: self.int_in("model.max_attempts", 1, 20)? as u32,
            retry_base_delay: self.duration("model.retry_base_delay", 1, 60)?,
            retry_max_delay: self.duration("model.retry_max_delay", 1, 600)?,
            retry_budget: self.duration("model.retry_budget", 0, 3600)?,
        })
    }

    fn api_keys(&self) -> Result<Vec<SecretString>, ConfigError> {
        // An empty value (or an empty key file) means no keys, as for every other secret.
        let Some(text) = self.raw("api_keys").filter(|text| !text.trim().is_empty()) else {
            return Ok(Vec::new());
        };
        let keys: Vec<&str> = text.split(',').map(str::trim).collect();
        if keys.iter().any(|key| key.is_empty()) {
            return Err(self.invalid(
                "api_keys",
                "contains an empty key (keys are comma-separated)",
            ));
        }
        Ok(keys
            .into_iter()
            .map(|key| SecretString::from(key.to_owned()))
            .collect())
    }

    fn host(&self) -> Result<String, ConfigError> {
        let host = self.text("server.host");
        if host == "localhost" || IpAddr::from_str(&host).is_ok() {
            Ok(host)
        } else {
            Err(self.invalid(
                "server.host",
                &format!("'{host}' is not an IP address or localhost"),
            ))
        }
    }

    /// The raw text of a key, or `None` when no layer sets it.
    fn raw(&self, path: &str) -> Option<String> {
        let mut value: Option<&Value> = None;
        let mut dict = &self.merged;
        for part in path.split('.') {
            value = dict.get(part);
            if let Some(Value::Dict(_, child)) = value {
                dict = child;
            }
        }
        value.and_then(value_text)
    }

    /// The raw text of a key that has a built-in default.
    fn text(&self, path: &str) -> String {
        self.raw(path).unwrap_or_default()
    }

    fn parse<T: FromStr>(&self, path: &str, expected: &str) -> Result<T, ConfigError> {
        let text = self.text(path);
        text.trim()
            .parse()
            .map_err(|_| self.invalid(path, &format!("'{text}' is not {expected}")))
    }

    fn int_in(&self, path: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
        let expected = format!("a whole number from {min} to {max}");
        let value: u64 = self.parse(path, &expected)?;
        if (min..=max).contains(&value) {
            Ok(value)
        } else {
            Err(self.invalid(
                path,
                &format!("{value} is out of range: expected {expected}"),
            ))
        }
    }

    fn boolean(&self, path: &str) -> Result<bool, ConfigError> {
        let text = self.text(path);
        match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(self.invalid(path, &format!("'{text}' is not true or false"))),
        }
    }

    fn duration(&self, path: &str, min_ms: u64, max_secs: u64) -> Result<Duration, ConfigError> {
        let text = self.text(path);
        let value = humantime::parse_duration(text.trim()).map_err(|_| {
            self.invalid(
                path,
                &format!("'{text}' is not a duration (like \"500ms\" or \"5s\")"),
            )
        })?;
        let (min, max) = (Duration::from_millis(min_ms), Duration::from_secs(max_secs));
        if value < min || value > max {
            return Err(self.invalid(
                path,
                &format!("'{text}' is out of range: expected {min:?} to {max:?}"),
            ));
        }
        Ok(value)
    }

    fn secret(&self, path: &str) -> Result<Option<SecretString>, ConfigError> {
        match self.raw(path) {
            None => Ok(None),
            Some(text) if text.trim().is_empty() => Ok(None),
            Some(text) if text.trim() != text => {
                Err(self.invalid(path, "has leading or trailing white space"))
            }
            Some(text) => Ok(Some(SecretString::from(text))),
        }
    }

    /// A secret URL: validated for its scheme, and never echoed in the error.
    fn url_secret(
        &self,
        path: &str,
        schemes: &[&str],
    ) -> Result<Option<SecretString>, ConfigError> {
        let Some(secret) = self.secret(path)? else {
            return Ok(None);
        };
        let parsed = Url::parse(secrecy::ExposeSecret::expose_secret(&secret));
        match parsed {
            Ok(url) if schemes.contains(&url.scheme()) => Ok(Some(secret)),
            Ok(_) => Err(self.invalid(path, &format!("the scheme must be {}://", schemes[0]))),
            Err(error) => Err(self.invalid(path, &format!("not a valid URL ({error})"))),
        }
    }

    /// Where a key's value came from, in the words the user used to set it.
    fn origin(&self, path: &str) -> String {
        if let Some(variable) = self.env.variable_for(path) {
            return variable.to_owned();
        }
        if let Some(file) = self.file_origin(path) {
            return format!("{path} in {file}");
        }
        keys::find(path).map_or_else(|| path.to_owned(), keys::Key::display_name)
    }

    fn file_origin(&self, path: &str) -> Option<String> {
        match self.figment.find_metadata(path)?.source.as_ref()? {
            Source::File(file) => Some(file.display().to_string()),
            _ => None,
        }
    }

    fn invalid(&self, path: &str, problem: &str) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin(path),
            problem: problem.to_owned(),
        }
    }

    fn missing(&self, path: &str, hint: &str) -> ConfigError {
        ConfigError::Missing {
            origin: self.origin(path),
            hint: hint.to_owned(),
        }
    }

    fn effective(&self) -> Vec<EffectiveValue> {
        KEYS.iter()
            .map(|key| {
                let value = match self.raw(key.path) {
                    None => "(unset)".to_owned(),
                    Some(text) if text.is_empty() => "(unset)".to_owned(),
                    Some(_) if key.secret => "[redacted]".to_owned(),
                    Some(text) => text,
                };
                let origin = if self.env.variable_for(key.path).is_some() {
                    self.origin(key.path)
                } else if let Some(file) = self.file_origin(key.path) {
                    file
                } else {
                    "default".to_owned()
                };
                EffectiveValue {
                    key: key.path,
                    value,
                    origin,
                }
            })
            .collect()
    }
}

/// A scalar as text. TOML gives numbers and booleans typed; they are typed again by `Layers`.
fn value_text(value: &Value) -> Option<String> {
    match value {
        Value::String(_, text) => Some(text.clone()),
        Value::Char(_, character) => Some(character.to_string()),
        Value::Bool(_, flag) => Some(flag.to_string()),
        Value::Num(_, number) => Some(num_text(*number)),
        Value::Array(_, items) => Some(
            items
                .iter()
                .filter_map(value_text)
                .collect::<Vec<_>>()
                .join(","),
        ),
        Value::Empty(..) => Some(String::new()),
        Value::Dict(..) => None,
    }
}

fn num_text(number: Num) -> String {
    if let Some(unsigned) = number.to_u128() {
        unsigned.to_string()
    } else if let Some(signed) = number.to_i128() {
        signed.to_string()
    } else {
        number
            .to_f64()
            .map(|float| float.to_string())
            .unwrap_or_default()
    }
}

/// Leaf keys of a file's table that match no known key.
fn unknown_file_keys(table: &Dict, prefix: &str) -> Vec<String> {
    let mut unknown = Vec::new();
    for (name, value) in table {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        if path == crate::http_tools::FILE_KEY {
            continue;
        }
        match value {
            Value::Dict(_, child) if keys::find(&path).is_none() => {
                unknown.extend(unknown_file_keys(child, &path));
            }
            _ if keys::find(&path).is_none() => unknown.push(path),
            _ => {}
        }
    }
    unknown
}
