//! Settings built from several keys, or from a key's text in a format of its own: the API keys,
//! trace export, usage readers, quotas and CORS. Errors name the key (and never quote a secret).

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::error::ConfigError;
use crate::keys::{self, ApiValues, TelemetryValues};
use crate::load::Layers;
use crate::settings::{
    ApiKey, CorsSettings, SamplerRoot, TokenQuotas, TraceSampler, TraceSettings,
};

impl Layers {
    /// `key` or `name:key` entries, comma-separated: an entry is named when the text before its
    /// first `:` is a caller name ([`ApiKey::is_caller_name`]); otherwise it is all key.
    pub(crate) fn api_keys(&self, text: Option<SecretString>) -> Result<Vec<ApiKey>, ConfigError> {
        let key = &keys::API_KEYS;
        // An empty value (or an empty key file) means no keys, as for every other secret.
        let Some(text) = text else {
            return Ok(Vec::new());
        };
        let mut parsed = Vec::new();
        for entry in text.expose_secret().split(',').map(str::trim) {
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

    /// OTLP trace export: on when an endpoint is set, unless `ENABLE_TRACING=false` (`switch`).
    /// Every key is validated either way.
    pub(crate) fn traces(
        &self,
        switch: Option<bool>,
        values: TelemetryValues,
    ) -> Result<Option<TraceSettings>, ConfigError> {
        // The base endpoint gets the signal's path, as the OpenTelemetry specification says.
        let endpoint = match (values.otlp_traces_endpoint, values.otlp_endpoint) {
            (Some(url), _) => Some(url),
            (None, Some(base)) => {
                let joined = format!("{}/v1/traces", base.as_str().trim_end_matches('/'));
                Some(Url::parse(&joined).map_err(|_| {
                    self.invalid(&keys::TELEMETRY_OTLP_ENDPOINT, "cannot take /v1/traces")
                })?)
            }
            (None, None) => None,
        };
        let headers = match values.otlp_headers {
            None => Vec::new(),
            Some(text) => pairs(text.expose_secret())
                .map_err(|problem| self.invalid(&keys::TELEMETRY_OTLP_HEADERS, &problem))?
                .into_iter()
                .map(|(name, value)| (name, SecretString::from(value)))
                .collect(),
        };
        let resource_attributes = pairs(&values.resource_attributes)
            .map_err(|problem| self.invalid(&keys::TELEMETRY_RESOURCE_ATTRIBUTES, &problem))?;
        let ratio = f64::from(values.sampler_arg);
        let root = match values.sampler.trim_start_matches("parentbased_") {
            "always_off" => SamplerRoot::AlwaysOff,
            "traceidratio" => SamplerRoot::Ratio(ratio),
            _ => SamplerRoot::AlwaysOn,
        };
        let service_name = values.service_name.trim();
        if service_name.is_empty() {
            return Err(self.invalid(&keys::TELEMETRY_SERVICE_NAME, "is empty"));
        }
        let Some(endpoint) = endpoint.filter(|_| switch != Some(false)) else {
            return Ok(None);
        };
        Ok(Some(TraceSettings {
            endpoint,
            headers,
            timeout: values.otlp_timeout,
            service_name: service_name.to_owned(),
            resource_attributes,
            sampler: TraceSampler {
                parent_based: values.sampler.starts_with("parentbased_"),
                root,
            },
            max_queue_size: values.max_queue_size,
            capture_content: values.capture_content,
        }))
    }

    /// Caller names, comma-separated.
    pub(crate) fn usage_readers(&self, text: &str) -> Result<Vec<String>, ConfigError> {
        let names: Vec<String> = list(text);
        if let Some(bad) = names.iter().find(|name| !ApiKey::is_caller_name(name)) {
            return Err(self.invalid(
                &keys::API_USAGE_READERS,
                &format!("'{bad}' is not a caller name"),
            ));
        }
        Ok(names)
    }

    /// 1 to 256 visible ASCII characters: it travels in URL paths and JSON.
    pub(crate) fn check_model_id(&self, id: &str) -> Result<(), ConfigError> {
        if !(1..=256).contains(&id.len()) || !id.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(self.invalid(
                &keys::OPENAI_API_MODEL_ID,
                &format!("'{id}' is not 1 to 256 visible ASCII characters"),
            ));
        }
        Ok(())
    }

    /// The default quota, and `name:tokens` entries, comma-separated.
    pub(crate) fn quotas(&self, values: &ApiValues) -> Result<TokenQuotas, ConfigError> {
        let key = &keys::API_DAILY_TOKEN_QUOTAS;
        let mut callers = Vec::new();
        for entry in list(&values.daily_token_quotas) {
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
            default: values.daily_token_quota,
            callers,
        })
    }

    /// CORS, when origins are configured: `*` or exact origins, never `*` with credentials.
    pub(crate) fn cors(&self, values: &ApiValues) -> Result<Option<CorsSettings>, ConfigError> {
        let key = &keys::API_CORS_ALLOWED_ORIGINS;
        let origins = list(&values.cors_allowed_origins);
        let methods = list(&values.cors_allowed_methods);
        let headers = list(&values.cors_allowed_headers);
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
        if any && values.cors_allow_credentials {
            return Err(self.invalid(
                key,
                "`*` cannot be combined with AGENT_API__CORS_ALLOW_CREDENTIALS=true: list the origins",
            ));
        }
        for origin in origins.iter().filter(|origin| *origin != "*") {
            let parsed = Url::parse(origin).ok().filter(|url| {
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
            allow_credentials: values.cors_allow_credentials,
            max_age: values.cors_max_age,
        }))
    }
}

/// The items of a comma-separated list, trimmed, without empty ones.
fn list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
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
