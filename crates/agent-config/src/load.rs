//! Loading: merge the layers with figment, then validate every key into [`Settings`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Num, Value};
use figment::{Figment, Metadata, Provider, Source};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::env::EnvValues;
use crate::error::ConfigError;
use crate::keys::{self, CONFIG_FILE_VARIABLE, KEYS, Key, Kind};
use crate::settings::{
    ApiKey, ApiSettings, CorsSettings, HealthSettings, LogFormat, LogSettings, ModelProvider,
    ModelSettings, OpenAiApiSettings, Profile, SamplerRoot, ServerSettings, Settings,
    StorageSettings, TokenQuotas, TraceSampler, TraceSettings, TurnSettings,
};

/// The built-in defaults, from the keys' declarations, as figment's first layer.
struct Defaults;

impl Provider for Defaults {
    fn metadata(&self) -> Metadata {
        Metadata::named("built-in default")
    }

    fn data(&self) -> Result<Map<figment::Profile, Dict>, figment::Error> {
        let mut root = Dict::new();
        for key in KEYS {
            if let Some(default) = key.default {
                crate::env::insert_nested(&mut root, key.path, Value::from(default.to_owned()));
            }
        }
        Ok(figment::Profile::Default.collect(root))
    }
}

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
    Ok((layers.host()?, layers.port(&keys::SERVER_PORT)?))
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
        let mut figment = Figment::from(Defaults);
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
        let profile = match self.choice(&keys::PROFILE)? {
            "production" => Profile::Production,
            _ => Profile::Dev,
        };
        let format = match self.choice(&keys::LOG_FORMAT)? {
            "json" => LogFormat::Json,
            "pretty" => LogFormat::Pretty,
            _ => LogFormat::Auto,
        };
        let workers = self.int(&keys::SERVER_WORKERS)?;
        let settings = Settings {
            profile,
            log: LogSettings {
                format,
                enable_tracing: self.optional_boolean(&keys::ENABLE_TRACING)? == Some(true),
                repeat_interval: self.duration(&keys::LOG_REPEAT_INTERVAL)?,
            },
            traces: self.traces()?,
            enable_streaming: self.boolean(&keys::ENABLE_STREAMING)?,
            api_keys: self.api_keys()?,
            api: ApiSettings {
                max_body_bytes: self.int(&keys::API_MAX_BODY_BYTES)? as usize,
                max_message_chars: self.int(&keys::API_MAX_MESSAGE_CHARS)? as usize,
                lock_wait: self.duration(&keys::API_LOCK_WAIT)?,
                idempotency_retention: self.duration(&keys::API_IDEMPOTENCY_RETENTION)?,
                sse_keepalive: self.duration(&keys::API_SSE_KEEPALIVE)?,
                metrics_require_auth: self.boolean(&keys::API_METRICS_REQUIRE_AUTH)?,
                trust_forwarded_for: self.boolean(&keys::API_TRUST_FORWARDED_FOR)?,
                rate_limit_requests: self.int(&keys::RATE_LIMIT_REQUESTS)? as u32,
                rate_limit_window: self.duration(&keys::RATE_LIMIT_WINDOW)?,
                cors: self.cors()?,
                usage_readers: self.usage_readers()?,
                quotas: self.quotas()?,
                metrics_caller_labels: self.boolean(&keys::API_METRICS_CALLER_LABELS)?,
                docs_page: self
                    .optional_boolean(&keys::API_DOCS_PAGE)?
                    .unwrap_or(profile == Profile::Dev),
                playground_page: self
                    .optional_boolean(&keys::API_PLAYGROUND_PAGE)?
                    .unwrap_or(profile == Profile::Dev),
            },
            openai_api: OpenAiApiSettings {
                model_id: self.model_id()?,
                max_body_bytes: self.int(&keys::OPENAI_API_MAX_BODY_BYTES)? as usize,
                follow_system_messages: self.choice(&keys::OPENAI_API_SYSTEM_MESSAGES)? == "follow",
            },
            server: ServerSettings {
                host: self.host()?,
                port: self.port(&keys::SERVER_PORT)?,
                workers: if workers == 0 {
                    std::thread::available_parallelism().map_or(1, |count| count.get())
                } else {
                    workers as usize
                },
                shutdown_delay: self.duration(&keys::SERVER_SHUTDOWN_DELAY)?,
                drain_timeout: self.duration(&keys::SERVER_DRAIN_TIMEOUT)?,
                max_connections: self.int(&keys::SERVER_MAX_CONNECTIONS)? as usize,
                max_turns_in_flight: self.int(&keys::SERVER_MAX_TURNS_IN_FLIGHT)? as usize,
                overload_retry_after: self.duration(&keys::SERVER_OVERLOAD_RETRY_AFTER)?,
            },
            model: self.model(profile)?,
            turn: TurnSettings {
                max_steps: self.int(&keys::TURN_MAX_STEPS)? as usize,
                max_parallel_tools: self.int(&keys::TURN_MAX_PARALLEL_TOOLS)? as usize,
                turn_token_budget: self.int(&keys::TURN_TURN_TOKEN_BUDGET)?,
                session_token_budget: self.int(&keys::TURN_SESSION_TOKEN_BUDGET)?,
                turn_deadline: self.duration(&keys::TURN_TURN_DEADLINE)?,
                tool_timeout: self.duration(&keys::TURN_TOOL_TIMEOUT)?,
                history_window: self.int(&keys::TURN_HISTORY_WINDOW)? as usize,
                history_cache_bytes: self.int(&keys::TURN_HISTORY_CACHE_BYTES)?,
                system_prompt: self.text(&keys::TURN_SYSTEM_PROMPT)?,
            },
            http_tools: crate::http_tools::load(
                &self.figment,
                self.file.as_deref().unwrap_or_default(),
                crate::http_tools::Defaults {
                    method: self.choice(&keys::HTTP_TOOL_DEFAULTS_METHOD)?.to_owned(),
                    timeout: self.duration(&keys::HTTP_TOOL_DEFAULTS_TIMEOUT)?,
                    max_response_bytes: self.int(&keys::HTTP_TOOL_DEFAULTS_MAX_RESPONSE_BYTES)?
                        as usize,
                },
            )?,
            mcp_servers: crate::mcp_servers::load(
                &self.figment,
                self.file.as_deref().unwrap_or_default(),
                self.int(&keys::HTTP_TOOL_DEFAULTS_MAX_RESPONSE_BYTES)? as usize,
            )?,
            storage: StorageSettings {
                database_url: self.url_secret(&keys::STORAGE_DATABASE_URL)?,
                redis_url: self.url_secret(&keys::STORAGE_REDIS_URL)?,
                pool_size: self.int(&keys::STORAGE_POOL_SIZE)? as usize,
                connect_timeout: self.duration(&keys::STORAGE_CONNECT_TIMEOUT)?,
                statement_timeout: self.duration(&keys::STORAGE_STATEMENT_TIMEOUT)?,
                run_migrations: self.boolean(&keys::STORAGE_RUN_MIGRATIONS)?,
                startup_timeout: self.duration(&keys::STORAGE_STARTUP_TIMEOUT)?,
                redis_pool_size: self.int(&keys::STORAGE_REDIS_POOL_SIZE)? as usize,
                redis_timeout: self.duration(&keys::STORAGE_REDIS_TIMEOUT)?,
                redis_key_prefix: self.text(&keys::STORAGE_REDIS_KEY_PREFIX)?,
                session_retention: Some(self.duration(&keys::STORAGE_SESSION_RETENTION)?)
                    .filter(|retention| !retention.is_zero()),
                retention_sweep_interval: self.duration(&keys::STORAGE_RETENTION_SWEEP_INTERVAL)?,
            },
            health: HealthSettings {
                check_timeout: self.duration(&keys::HEALTH_CHECK_TIMEOUT)?,
                cache_ttl: self.duration(&keys::HEALTH_CACHE_TTL)?,
            },
        };
        if profile == Profile::Production {
            let storage = &settings.storage;
            if storage.database_url.is_none() {
                return Err(
                    self.missing(&keys::STORAGE_DATABASE_URL, "conversations need Postgres")
                );
            }
            if storage.redis_url.is_none() {
                return Err(
                    self.missing(&keys::STORAGE_REDIS_URL, "locks and rate limits need Redis")
                );
            }
        }
        Ok(settings)
    }

    fn model(&self, profile: Profile) -> Result<ModelSettings, ConfigError> {
        let api_key = self.secret(&keys::MODEL_API_KEY)?;
        let base_url_key = &keys::MODEL_BASE_URL;
        let base_url_set = self.env.variable_for(base_url_key.path).is_some()
            || self.file_origin(base_url_key.path).is_some();
        let provider = match self.choice(&keys::MODEL_PROVIDER)? {
            "offline" => "offline",
            "openai" => "openai",
            _ if api_key.is_some() || base_url_set => "openai",
            _ => "offline",
        };
        let provider = match (provider, profile) {
            ("offline", Profile::Production) => {
                return Err(self.missing(
                    &keys::MODEL_API_KEY,
                    "set OPENAI_API_KEY and/or OPENAI_BASE_URL (the offline model is for dev only)",
                ));
            }
            ("offline", Profile::Dev) => ModelProvider::Offline,
            _ => ModelProvider::OpenAiCompatible {
                base_url: self.http_url(base_url_key)?,
                api_key,
            },
        };
        let name = self.text(&keys::MODEL_NAME)?;
        if name.trim().is_empty() {
            return Err(self.invalid(&keys::MODEL_NAME, "must not be empty"));
        }
        Ok(ModelSettings {
            provider,
            name,
            temperature: self.float(&keys::MODEL_TEMPERATURE)?,
            max_tokens: self.int(&keys::MODEL_MAX_TOKENS)? as u32,
            request_timeout: self.duration(&keys::MODEL_REQUEST_TIMEOUT)?,
            max_attempts: self.int(&keys::MODEL_MAX_ATTEMPTS)? as u32,
            retry_base_delay: self.duration(&keys::MODEL_RETRY_BASE_DELAY)?,
            retry_max_delay: self.duration(&keys::MODEL_RETRY_MAX_DELAY)?,
            retry_budget: self.duration(&keys::MODEL_RETRY_BUDGET)?,
        })
    }

    /// `key` or `name:key` entries, comma-separated: an entry is named when the text before its
    /// first `:` is a caller name ([`ApiKey::is_caller_name`]); otherwise it is all key.
    fn api_keys(&self) -> Result<Vec<ApiKey>, ConfigError> {
        let key = &keys::API_KEYS;
        self.expect_kind(key, matches!(key.kind, Kind::SecretList))?;
        // An empty value (or an empty key file) means no keys, as for every other secret.
        let Some(text) = self.raw(key.path).filter(|text| !text.trim().is_empty()) else {
            return Ok(Vec::new());
        };
        let mut parsed = Vec::new();
        for entry in text.split(',').map(str::trim) {
            let (caller, secret) = match entry.split_once(':') {
                Some((name, secret)) if ApiKey::is_caller_name(name) => {
                    (Some(name.to_owned()), secret.trim())
                }
                _ => (None, entry),
            };
            if secret.is_empty() {
                return Err(self.invalid(
                    key,
                    "contains an empty key (entries are `key` or `name:key`, comma-separated)",
                ));
            }
            parsed.push(ApiKey {
                caller,
                secret: SecretString::from(secret.to_owned()),
            });
        }
        Ok(parsed)
    }

    /// OTLP trace export: on when an endpoint is set, unless `ENABLE_TRACING=false`. Every key is
    /// validated either way.
    fn traces(&self) -> Result<Option<TraceSettings>, ConfigError> {
        let switch = self.optional_boolean(&keys::ENABLE_TRACING)?;
        let endpoint = self.optional_http_url(&keys::TELEMETRY_OTLP_ENDPOINT)?;
        let traces_endpoint = self.optional_http_url(&keys::TELEMETRY_OTLP_TRACES_ENDPOINT)?;
        // The base endpoint gets the signal's path, as the OpenTelemetry specification says.
        let endpoint = match (traces_endpoint, endpoint) {
            (Some(url), _) => Some(url),
            (None, Some(base)) => {
                let joined = format!("{}/v1/traces", base.as_str().trim_end_matches('/'));
                Some(Url::parse(&joined).map_err(|_| {
                    self.invalid(&keys::TELEMETRY_OTLP_ENDPOINT, "cannot take /v1/traces")
                })?)
            }
            (None, None) => None,
        };
        let headers = match self.secret(&keys::TELEMETRY_OTLP_HEADERS)? {
            None => Vec::new(),
            Some(text) => pairs(text.expose_secret())
                .map_err(|problem| self.invalid(&keys::TELEMETRY_OTLP_HEADERS, &problem))?
                .into_iter()
                .map(|(name, value)| (name, SecretString::from(value)))
                .collect(),
        };
        let resource_attributes = pairs(&self.text(&keys::TELEMETRY_RESOURCE_ATTRIBUTES)?)
            .map_err(|problem| self.invalid(&keys::TELEMETRY_RESOURCE_ATTRIBUTES, &problem))?;
        let ratio = f64::from(self.float(&keys::TELEMETRY_SAMPLER_ARG)?);
        let sampler = self.choice(&keys::TELEMETRY_SAMPLER)?;
        let root = match sampler.trim_start_matches("parentbased_") {
            "always_off" => SamplerRoot::AlwaysOff,
            "traceidratio" => SamplerRoot::Ratio(ratio),
            _ => SamplerRoot::AlwaysOn,
        };
        let service_name = self.text(&keys::TELEMETRY_SERVICE_NAME)?;
        if service_name.trim().is_empty() {
            return Err(self.invalid(&keys::TELEMETRY_SERVICE_NAME, "is empty"));
        }
        self.choice(&keys::TELEMETRY_OTLP_PROTOCOL)?;
        let timeout = self.duration(&keys::TELEMETRY_OTLP_TIMEOUT)?;
        let max_queue_size = self.int(&keys::TELEMETRY_MAX_QUEUE_SIZE)? as usize;
        let capture_content = self.boolean(&keys::TELEMETRY_CAPTURE_CONTENT)?;
        let Some(endpoint) = endpoint.filter(|_| switch != Some(false)) else {
            return Ok(None);
        };
        Ok(Some(TraceSettings {
            endpoint,
            headers,
            timeout,
            service_name: service_name.trim().to_owned(),
            resource_attributes,
            sampler: TraceSampler {
                parent_based: sampler.starts_with("parentbased_"),
                root,
            },
            max_queue_size,
            capture_content,
        }))
    }

    /// Caller names, comma-separated.
    fn usage_readers(&self) -> Result<Vec<String>, ConfigError> {
        let key = &keys::API_USAGE_READERS;
        let names: Vec<String> = self
            .text(key)?
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .collect();
        if let Some(bad) = names.iter().find(|name| !ApiKey::is_caller_name(name)) {
            return Err(self.invalid(key, &format!("'{bad}' is not a caller name")));
        }
        Ok(names)
    }

    /// 1 to 256 visible ASCII characters: it travels in URL paths and JSON.
    fn model_id(&self) -> Result<String, ConfigError> {
        let key = &keys::OPENAI_API_MODEL_ID;
        let id = self.text(key)?;
        if !(1..=256).contains(&id.len()) || !id.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(self.invalid(
                key,
                &format!("'{id}' is not 1 to 256 visible ASCII characters"),
            ));
        }
        Ok(id)
    }

    /// The default quota, and `name:tokens` entries, comma-separated.
    fn quotas(&self) -> Result<TokenQuotas, ConfigError> {
        let key = &keys::API_DAILY_TOKEN_QUOTAS;
        let mut callers = Vec::new();
        for entry in self.text(key)?.split(',').map(str::trim) {
            if entry.is_empty() {
                continue;
            }
            let parsed = entry.split_once(':').and_then(|(name, tokens)| {
                let tokens = tokens.trim().parse::<u64>().ok()?;
                ApiKey::is_caller_name(name.trim()).then(|| (name.trim().to_owned(), tokens))
            });
            let Some((name, tokens)) = parsed else {
                return Err(self.invalid(
                    key,
                    &format!("'{entry}' is not `name:tokens` (a caller name, a whole number)"),
                ));
            };
            if callers.iter().any(|(known, _)| *known == name) {
                return Err(self.invalid(key, &format!("names caller '{name}' twice")));
            }
            callers.push((name, tokens));
        }
        Ok(TokenQuotas {
            default: self.int(&keys::API_DAILY_TOKEN_QUOTA)?,
            callers,
        })
    }

    /// CORS, when origins are configured: `*` or exact origins, never `*` with credentials.
    fn cors(&self) -> Result<Option<CorsSettings>, ConfigError> {
        let key = &keys::API_CORS_ALLOWED_ORIGINS;
        let list = |text: String| -> Vec<String> {
            text.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let origins = list(self.text(key)?);
        // Every key is validated, whether CORS is on or not.
        let allow_credentials = self.boolean(&keys::API_CORS_ALLOW_CREDENTIALS)?;
        let methods = list(self.text(&keys::API_CORS_ALLOWED_METHODS)?);
        let headers = list(self.text(&keys::API_CORS_ALLOWED_HEADERS)?);
        let max_age = self.duration(&keys::API_CORS_MAX_AGE)?;
        // HTTP tokens (RFC 9110 §5.6.2): what a method or a header name may be.
        let is_token = |text: &str| {
            !text.is_empty()
                && text
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte))
        };
        for (key, items) in [
            (&keys::API_CORS_ALLOWED_METHODS, &methods),
            (&keys::API_CORS_ALLOWED_HEADERS, &headers),
        ] {
            if let Some(bad) = items.iter().find(|item| !is_token(item)) {
                return Err(self.invalid(key, &format!("'{bad}' is not an HTTP token")));
            }
        }
        if origins.is_empty() {
            return Ok(None);
        }
        let any = origins.iter().any(|origin| origin == "*");
        if any && origins.len() > 1 {
            return Err(self.invalid(key, "`*` stands alone: any origin, or a list without it"));
        }
        if any && allow_credentials {
            return Err(self.invalid(
                key,
                "`*` cannot be combined with AGENT_API__CORS_ALLOW_CREDENTIALS=true: list the origins",
            ));
        }
        for origin in origins.iter().filter(|origin| *origin != "*") {
            let parsed = url::Url::parse(origin).ok().filter(|url| {
                matches!(url.scheme(), "http" | "https")
                    && url.host().is_some()
                    && url.path() == "/"
                    && !origin.ends_with('/')
                    && url.query().is_none()
            });
            if parsed.is_none() {
                return Err(self.invalid(
                    key,
                    &format!("'{origin}' is not an origin (scheme://host[:port], no path)"),
                ));
            }
        }
        Ok(Some(CorsSettings {
            origins: if any { Vec::new() } else { origins },
            methods,
            headers,
            allow_credentials,
            max_age,
        }))
    }

    fn host(&self) -> Result<String, ConfigError> {
        let key = &keys::SERVER_HOST;
        self.expect_kind(key, matches!(key.kind, Kind::Host))?;
        let host = self.raw(key.path).unwrap_or_default();
        if host == "localhost" || IpAddr::from_str(&host).is_ok() {
            Ok(host)
        } else {
            Err(self.invalid(key, &format!("'{host}' is not an IP address or localhost")))
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

    /// A key read as a kind it is not declared as: a mistake in this file, which the tests that
    /// load the defaults catch.
    fn expect_kind(&self, key: &Key, declared: bool) -> Result<(), ConfigError> {
        if declared {
            Ok(())
        } else {
            Err(self.misread(key))
        }
    }

    fn misread(&self, key: &Key) -> ConfigError {
        self.invalid(key, &format!("is declared as {:?}", key.kind))
    }

    /// The raw text of a key (its default when no layer sets it).
    fn text(&self, key: &Key) -> Result<String, ConfigError> {
        self.expect_kind(key, matches!(key.kind, Kind::Text))?;
        Ok(self.raw(key.path).unwrap_or_default())
    }

    fn parse<T: FromStr>(&self, key: &Key, expected: &str) -> Result<T, ConfigError> {
        let text = self.raw(key.path).unwrap_or_default();
        text.trim()
            .parse()
            .map_err(|_| self.invalid(key, &format!("'{text}' is not {expected}")))
    }

    fn int(&self, key: &Key) -> Result<u64, ConfigError> {
        let Kind::Int { min, max } = key.kind else {
            return Err(self.misread(key));
        };
        let expected = format!("a whole number from {min} to {max}");
        let value: u64 = self.parse(key, &expected)?;
        if (min..=max).contains(&value) {
            Ok(value)
        } else {
            Err(self.invalid(
                key,
                &format!("{value} is out of range: expected {expected}"),
            ))
        }
    }

    fn float(&self, key: &Key) -> Result<f32, ConfigError> {
        let Kind::Float { min, max } = key.kind else {
            return Err(self.misread(key));
        };
        let expected = format!("a number from {min} to {max}");
        let value: f32 = self.parse(key, &expected)?;
        if (min..=max).contains(&value) {
            Ok(value)
        } else {
            Err(self.invalid(key, &format!("must be {expected}")))
        }
    }

    fn port(&self, key: &Key) -> Result<u16, ConfigError> {
        self.expect_kind(key, matches!(key.kind, Kind::Port))?;
        self.parse(key, "a port number (0-65535)")
    }

    fn boolean(&self, key: &Key) -> Result<bool, ConfigError> {
        self.expect_kind(key, matches!(key.kind, Kind::Bool))?;
        let text = self.raw(key.path).unwrap_or_default();
        match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(self.invalid(key, &format!("'{text}' is not true or false"))),
        }
    }

    /// The canonical name of the choice the value names (case-insensitive; `a|b` declares `b` as
    /// another name for `a`).
    fn choice(&self, key: &Key) -> Result<&'static str, ConfigError> {
        let Kind::Choice(names) = key.kind else {
            return Err(self.misread(key));
        };
        let text = self.raw(key.path).unwrap_or_default();
        let wanted = text.trim().to_ascii_lowercase();
        names
            .iter()
            .find(|names| {
                names
                    .split('|')
                    .any(|name| name.eq_ignore_ascii_case(&wanted))
            })
            .map(|names| names.split('|').next().unwrap_or(names))
            .ok_or_else(|| {
                let canonical: Vec<&str> = names
                    .iter()
                    .map(|names| names.split('|').next().unwrap_or(names))
                    .collect();
                self.invalid(
                    key,
                    &format!("'{text}' is not one of: {}", canonical.join(", ")),
                )
            })
    }

    fn duration(&self, key: &Key) -> Result<Duration, ConfigError> {
        let Kind::Duration { min, max } = key.kind else {
            return Err(self.misread(key));
        };
        let text = self.raw(key.path).unwrap_or_default();
        let value = humantime::parse_duration(text.trim()).map_err(|_| {
            self.invalid(
                key,
                &format!("'{text}' is not a duration (like \"500ms\" or \"5s\")"),
            )
        })?;
        if value < min || value > max {
            return Err(self.invalid(
                key,
                &format!("'{text}' is out of range: expected {min:?} to {max:?}"),
            ));
        }
        Ok(value)
    }

    fn http_url(&self, key: &Key) -> Result<Url, ConfigError> {
        self.expect_kind(key, matches!(key.kind, Kind::HttpUrl))?;
        let text = self.raw(key.path).unwrap_or_default();
        Url::parse(&text)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
            .ok_or_else(|| self.invalid(key, &format!("'{text}' is not an http(s) URL")))
    }

    /// A boolean key without a default: `None` when no layer sets it (or sets it empty).
    fn optional_boolean(&self, key: &Key) -> Result<Option<bool>, ConfigError> {
        match self.raw(key.path) {
            Some(text) if !text.trim().is_empty() => self.boolean(key).map(Some),
            _ => {
                self.expect_kind(key, matches!(key.kind, Kind::Bool))?;
                Ok(None)
            }
        }
    }

    /// A URL key without a default: `None` when no layer sets it (or sets it empty).
    fn optional_http_url(&self, key: &Key) -> Result<Option<Url>, ConfigError> {
        match self.raw(key.path) {
            Some(text) if !text.trim().is_empty() => self.http_url(key).map(Some),
            _ => {
                self.expect_kind(key, matches!(key.kind, Kind::HttpUrl))?;
                Ok(None)
            }
        }
    }

    fn secret(&self, key: &Key) -> Result<Option<SecretString>, ConfigError> {
        self.expect_kind(key, key.is_secret())?;
        match self.raw(key.path) {
            None => Ok(None),
            Some(text) if text.trim().is_empty() => Ok(None),
            Some(text) if text.trim() != text => {
                Err(self.invalid(key, "has leading or trailing white space"))
            }
            Some(text) => Ok(Some(SecretString::from(text))),
        }
    }

    /// A secret URL: validated for its scheme, and never echoed in the error.
    fn url_secret(&self, key: &Key) -> Result<Option<SecretString>, ConfigError> {
        let Kind::SecretUrl(schemes) = key.kind else {
            return Err(self.misread(key));
        };
        let Some(secret) = self.secret(key)? else {
            return Ok(None);
        };
        let parsed = Url::parse(secrecy::ExposeSecret::expose_secret(&secret));
        match parsed {
            Ok(url) if schemes.contains(&url.scheme()) => Ok(Some(secret)),
            Ok(_) => Err(self.invalid(key, &format!("the scheme must be {}://", schemes[0]))),
            Err(error) => Err(self.invalid(key, &format!("not a valid URL ({error})"))),
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

    fn invalid(&self, key: &Key, problem: &str) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin(key.path),
            problem: problem.to_owned(),
        }
    }

    fn missing(&self, key: &Key, hint: &str) -> ConfigError {
        ConfigError::Missing {
            origin: self.origin(key.path),
            hint: hint.to_owned(),
        }
    }

    fn effective(&self) -> Vec<EffectiveValue> {
        KEYS.iter()
            .map(|key| {
                let value = match self.raw(key.path) {
                    None => "(unset)".to_owned(),
                    Some(text) if text.is_empty() => "(unset)".to_owned(),
                    Some(_) if key.is_secret() => "[redacted]".to_owned(),
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
        if path == crate::http_tools::FILE_KEY || path == crate::mcp_servers::FILE_KEY {
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

/// `key=value` pairs separated by commas, values percent-encoded: the format of
/// `OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_RESOURCE_ATTRIBUTES`. The problem never quotes a value
/// (headers hold credentials).
fn pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut parsed = Vec::new();
    for (index, entry) in text.split(',').enumerate() {
        if entry.trim().is_empty() {
            continue;
        }
        let Some((name, value)) = entry.split_once('=') else {
            return Err(format!(
                "entry {} has no '=' (expected name=value pairs separated by commas)",
                index + 1
            ));
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("entry {} has an empty name", index + 1));
        }
        let value = percent_encoding::percent_decode_str(value.trim())
            .decode_utf8()
            .map_err(|_| format!("the value of {name} is not UTF-8 once decoded"))?;
        parsed.push((name.to_owned(), value.into_owned()));
    }
    Ok(parsed)
}
