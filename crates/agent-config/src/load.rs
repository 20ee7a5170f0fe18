//! Loading: merge the layers with figment, then validate every key into [`Settings`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Num, Value};
use figment::{Figment, Metadata, Provider, Source};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use url::Url;

use crate::env::EnvValues;
use crate::error::ConfigError;
use crate::keys::{self, CONFIG_FILE_VARIABLE, KEYS, Key, Kind};
use crate::keys::{RootValues, TelemetryValues};
use crate::settings::{
    ApiSettings, ApiValues, ContextSettings, HealthSettings, HttpToolDefaults, LogFormat,
    LogSettings, ModelProvider, ModelSettings, ModelValues, OpenAiApiSettings, OpenAiApiValues,
    Profile, RateLimitSettings, RunSettings, ServerSettings, Settings, StorageSettings,
    TurnSettings, WebhookDelivery,
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
    let mut warnings = layers.warnings;
    if settings.profile == crate::Profile::Production {
        for model in settings.models.iter().filter(|model| model.inline_key) {
            warnings.push(format!(
                "models ({}): api_key is written in the configuration file: read it from a file \
                 (api_key = {{ file = \"/run/secrets/...\" }})",
                model.name
            ));
        }
    }
    Ok(Loaded {
        settings,
        warnings,
        effective,
    })
}

/// Loads only the listen address, for `agent-server healthcheck`, which must work even where
/// other settings (secrets it cannot read, say) would not validate.
pub fn load_server_address(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<(String, u16), ConfigError> {
    let layers = Layers::new(vars.into_iter().collect())?;
    Ok((layers.host()?, u16::from_key(&layers, &keys::SERVER_PORT)?))
}

/// The merged layers, with enough bookkeeping to name where each value came from.
pub(crate) struct Layers {
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
        let root = RootValues::load(self)?;
        let profile = match root.profile {
            "production" => Profile::Production,
            _ => Profile::Dev,
        };
        let format = match root.log_format {
            "json" => LogFormat::Json,
            "pretty" => LogFormat::Pretty,
            _ => LogFormat::Auto,
        };
        let mut server = ServerSettings::load(self)?;
        if server.workers == 0 {
            server.workers = std::thread::available_parallelism().map_or(1, |count| count.get());
        }
        let tool_defaults = HttpToolDefaults::load(self)?;
        let file = self.file.as_deref().unwrap_or_default();
        let context = ContextSettings::load(self)?;
        let settings = Settings {
            profile,
            log: LogSettings {
                format,
                enable_tracing: root.enable_tracing == Some(true),
                repeat_interval: root.log_repeat_interval,
            },
            traces: self.traces(root.enable_tracing, TelemetryValues::load(self)?)?,
            enable_streaming: root.enable_streaming,
            api_keys: self.api_keys(root.api_keys)?,
            api: self.api(profile)?,
            openai_api: self.openai_api()?,
            rate_limit: RateLimitSettings::load(self)?,
            server,
            model: self.model(profile)?,
            turn: TurnSettings::load(self)?,
            context: context.clone(),
            runs: RunSettings::load(self)?,
            mcp_servers: crate::mcp_servers::load(
                &self.figment,
                file,
                tool_defaults.max_response_bytes,
            )?,
            http_tools: crate::http_tools::load(&self.figment, file, tool_defaults)?,
            builtin_approval: crate::approval::builtins(&self.figment, file)?,
            agents: crate::agents::load_agents(&self.figment, file, &context)?,
            models: crate::agents::load_models(&self.figment, file)?,
            default_agent: root.default_agent.clone(),
            webhooks: crate::webhooks::load(&self.figment, file)?,
            webhook_delivery: WebhookDelivery::load(self)?,
            storage: StorageSettings::load(self)?,
            health: HealthSettings::load(self)?,
        };
        crate::agents::check_default(settings.default_agent.as_deref(), &settings.agents)?;
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

    /// The API's keys, and what several of them make.
    fn api(&self, profile: Profile) -> Result<ApiSettings, ConfigError> {
        let values = ApiValues::load(self)?;
        Ok(ApiSettings {
            cors: self.cors(&values)?,
            usage_readers: self.usage_readers(&values.usage_readers)?,
            quotas: self.quotas(&values)?,
            docs_page: values.docs_page.unwrap_or(profile == Profile::Dev),
            playground_page: values.playground_page.unwrap_or(profile == Profile::Dev),
            values,
        })
    }

    fn openai_api(&self) -> Result<OpenAiApiSettings, ConfigError> {
        let values = OpenAiApiValues::load(self)?;
        self.check_model_id(&values.model_id)?;
        Ok(OpenAiApiSettings {
            follow_system_messages: values.system_messages == "follow",
            values,
        })
    }

    fn model(&self, profile: Profile) -> Result<ModelSettings, ConfigError> {
        let values = ModelValues::load(self)?;
        let base_url_set = self.env.variable_for(keys::MODEL_BASE_URL.path).is_some()
            || self.file_origin(keys::MODEL_BASE_URL.path).is_some();
        let provider = match values.provider {
            "offline" => "offline",
            "openai" => "openai",
            _ if values.api_key.is_some() || base_url_set => "openai",
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
                base_url: values.base_url.clone(),
                api_key: values.api_key.clone(),
            },
        };
        if values.name.trim().is_empty() {
            return Err(self.invalid(&keys::MODEL_NAME, "must not be empty"));
        }
        Ok(ModelSettings { values, provider })
    }

    fn host(&self) -> Result<String, ConfigError> {
        String::from_key(self, &keys::SERVER_HOST)
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

    /// A key read as a kind it is not declared as: a mistake in a declaration, which the tests
    /// that load the defaults catch.
    fn expect_kind(&self, key: &Key, declared: bool) -> Result<(), ConfigError> {
        if declared {
            Ok(())
        } else {
            Err(self.invalid(key, &format!("is declared as {:?}", key.kind)))
        }
    }

    /// The raw text of a key (its default when no layer sets it).
    fn text(&self, key: &Key) -> Result<String, ConfigError> {
        self.expect_kind(key, matches!(key.kind, Kind::Text | Kind::Host))?;
        Ok(self.raw(key.path).unwrap_or_default())
    }

    /// A key's value as `T`, by serde, reading numbers and booleans written as text (the
    /// environment's values stay text until here, so `007` is a number only where one is asked
    /// for); `expected` says what it should have been.
    fn typed<T: DeserializeOwned>(&self, key: &Key, expected: &str) -> Result<T, ConfigError> {
        self.figment
            .extract_inner_lossy::<T>(key.path)
            .map_err(|_| {
                let text = self.raw(key.path).unwrap_or_default();
                self.invalid(key, &format!("'{text}' is not {expected}"))
            })
    }

    fn int(&self, key: &Key) -> Result<u64, ConfigError> {
        let Kind::Int { min, max } = key.kind else {
            return self.expect_kind(key, false).map(|()| 0);
        };
        let expected = format!("a whole number from {min} to {max}");
        let value: u64 = self.typed(key, &expected)?;
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
            return self.expect_kind(key, false).map(|()| 0.0);
        };
        let expected = format!("a number from {min} to {max}");
        let value: f32 = self.typed(key, &expected)?;
        if (min..=max).contains(&value) {
            Ok(value)
        } else {
            Err(self.invalid(key, &format!("must be {expected}")))
        }
    }

    /// The canonical name of the choice the value names (case-insensitive; `a|b` declares `b` as
    /// another name for `a`).
    fn choice(&self, key: &Key) -> Result<&'static str, ConfigError> {
        let Kind::Choice(names) = key.kind else {
            return self.expect_kind(key, false).map(|()| "");
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
            return self.expect_kind(key, false).map(|()| Duration::ZERO);
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

    /// Whether no layer sets the key, or one sets it empty (a copied `.env.example`).
    fn unset(&self, key: &Key) -> bool {
        self.raw(key.path).is_none_or(|text| text.trim().is_empty())
    }

    /// A secret: `None` when unset or empty; never echoed in an error.
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
    fn url_secret(&self, key: &Key, schemes: &[&str]) -> Result<Option<SecretString>, ConfigError> {
        let Some(secret) = self.secret(key)? else {
            return Ok(None);
        };
        let parsed = Url::parse(secret.expose_secret());
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

    pub(crate) fn invalid(&self, key: &Key, problem: &str) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin(key.path),
            problem: problem.to_owned(),
        }
    }

    pub(crate) fn missing(&self, key: &Key, hint: &str) -> ConfigError {
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

/// How a section's field is read from its key ([`crate::keys`]): by the key's kind, within its
/// bounds, with errors that name where the value came from.
pub(crate) trait FromKey: Sized {
    fn from_key(layers: &Layers, key: &Key) -> Result<Self, ConfigError>;
}

impl FromKey for bool {
    fn from_key(layers: &Layers, key: &Key) -> Result<Self, ConfigError> {
        layers.expect_kind(key, matches!(key.kind, Kind::Bool))?;
        layers.typed(key, "true or false")
    }
}

impl FromKey for Option<bool> {
    fn from_key(layers: &Layers, key: &Key) -> Result<Self, ConfigError> {
        if layers.unset(key) {
            return layers
                .expect_kind(key, matches!(key.kind, Kind::Bool))
                .map(|()| None);
        }
        bool::from_key(layers, key).map(Some)
    }
}

impl FromKey for u16 {
    fn from_key(layers: &Layers, key: &Key) -> Result<Self, ConfigError> {
        layers.expect_kind(key, matches!(key.kind, Kind::Port))?;
        layers.typed(key, "a port number (0-65535)")
    }
}

impl FromKey for u64 {
    fn from_key(layers: &Layers, key: &Key) -> Result<Self, ConfigError> {
        layers.int(key)
    }
}

impl FromKey for u32 {
    fn from_key(layers: &Layers, key: &Key) -> Result<Self, ConfigError> {
        let value = layers.int(key)?;
        u32::try_from(value).map_err(|_| layers.invalid(key, &format!("{value} is too large")))
    }
}

impl FromKey for usize {
    fn from_key(layers: &Layers, key: &Key) -> Result<Self, ConfigError> {
        let value = layers.int(key)?;
        usize::try_from(value).map_err(|_| layers.invalid(key, &format!("{value} is too large")))
    }
}

impl FromKey for f32 {
    fn from_key(layers: &Layers, key: &Key) -> Result<Self, ConfigError> {
        layers.float(key)
    }
}

impl FromKey for Duration {
    fn from_key(layers: &Layers, key: &Key) -> Result<Self, ConfigError> {
        layers.duration(key)
    }
}

impl FromKey for &'static str {
    fn from_key(layers: &Layers, key: &Key) -> Result<Self, ConfigError> {
        layers.choice(key)
    }
}

/// Text, or a host (an IP address or `localhost`).
impl FromKey for Option<String> {
    fn from_key(layers: &Layers, key: &Key) -> Result<Self, ConfigError> {
        if layers.unset(key) {
            return Ok(None);
        }
        String::from_key(layers, key).map(Some)
    }
}

impl FromKey for String {
    fn from_key(layers: &Layers, key: &Key) -> Result<Self, ConfigError> {
        let text = layers.text(key)?;
        let host = matches!(key.kind, Kind::Host);
        if host && text != "localhost" && IpAddr::from_str(&text).is_err() {
            return Err(layers.invalid(key, &format!("'{text}' is not an IP address or localhost")));
        }
        Ok(text)
    }
}

impl FromKey for Url {
    fn from_key(layers: &Layers, key: &Key) -> Result<Self, ConfigError> {
        layers.http_url(key)
    }
}

impl FromKey for Option<Url> {
    fn from_key(layers: &Layers, key: &Key) -> Result<Self, ConfigError> {
        if layers.unset(key) {
            return layers
                .expect_kind(key, matches!(key.kind, Kind::HttpUrl))
                .map(|()| None);
        }
        layers.http_url(key).map(Some)
    }
}

/// A secret, a secret list, or a secret URL (checked for its scheme).
impl FromKey for Option<SecretString> {
    fn from_key(layers: &Layers, key: &Key) -> Result<Self, ConfigError> {
        match key.kind {
            Kind::SecretUrl(schemes) => layers.url_secret(key, schemes),
            _ => layers.secret(key),
        }
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
        if [
            crate::http_tools::FILE_KEY,
            crate::mcp_servers::FILE_KEY,
            crate::webhooks::FILE_KEY,
            crate::approval::BUILTIN_KEY,
            crate::agents::AGENTS_KEY,
            crate::agents::MODELS_KEY,
        ]
        .contains(&path.as_str())
        {
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
