//! Operator-declared webhook endpoints: `[[webhooks]]` tables in the TOML file, validated into
//! [`WebhookSettings`]. Only these URLs are ever sent events; secrets given as
//! `{ file = "/path" }` are read from files.

use base64::Engine;
use figment::Figment;
use secrecy::SecretString;
use serde::Deserialize;

use crate::error::ConfigError;
use crate::settings::WebhookSettings;
use crate::tables::{http_url, invalid, read};

/// The key of the endpoint tables in the file.
pub(crate) const FILE_KEY: &str = "webhooks";

/// The events a webhook may ask for.
pub const WEBHOOK_EVENTS: [&str; 4] = [
    "response.completed",
    "response.failed",
    "response.cancelled",
    "response.requires_action",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: String,
    secret: RawSecrets,
    #[serde(default)]
    events: Option<Vec<String>>,
    #[serde(default)]
    callers: Option<Vec<String>>,
}

/// One secret or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawSecrets {
    One(RawSecret),
    Several(Vec<RawSecret>),
}

/// A secret inline, or `{ file = "/path" }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawSecret {
    Inline(String),
    File { file: String },
}

pub(crate) fn load(figment: &Figment, file: &str) -> Result<Vec<WebhookSettings>, ConfigError> {
    let raw: Vec<RawWebhook> = read(figment, FILE_KEY, file)?;
    let mut webhooks: Vec<WebhookSettings> = Vec::with_capacity(raw.len());
    for (index, webhook) in raw.into_iter().enumerate() {
        let origin = format!("{FILE_KEY}[{index}] ({}) in {file}", webhook.url);
        let url = http_url(&origin, &webhook.url)?;
        if webhooks.iter().any(|other| other.url == url) {
            return Err(invalid(&origin, "another webhook has the same url"));
        }
        let raw_secrets = match webhook.secret {
            RawSecrets::One(secret) => vec![secret],
            RawSecrets::Several(secrets) => secrets,
        };
        if raw_secrets.is_empty() {
            return Err(invalid(&origin, "secret: at least one is needed"));
        }
        let mut secrets = Vec::with_capacity(raw_secrets.len());
        let mut inline = false;
        for (number, secret) in raw_secrets.into_iter().enumerate() {
            let text = match secret {
                RawSecret::Inline(text) => {
                    inline = true;
                    text
                }
                RawSecret::File { file: path } => std::fs::read_to_string(&path)
                    .map(|text| text.trim().to_owned())
                    .map_err(|error| {
                        invalid(
                            &origin,
                            format!("secret {number}: cannot read {path}: {error}"),
                        )
                    })?,
            };
            // Never echo it: say what is wrong, not what it is.
            if signing_key(&text).is_none() {
                return Err(invalid(
                    &origin,
                    format!("secret {number} is not `whsec_` followed by base64"),
                ));
            }
            secrets.push(SecretString::from(text));
        }
        let events = webhook.events.unwrap_or_else(|| {
            WEBHOOK_EVENTS
                .iter()
                .map(|event| (*event).to_owned())
                .collect()
        });
        if let Some(unknown) = events
            .iter()
            .find(|event| !WEBHOOK_EVENTS.contains(&event.as_str()))
        {
            return Err(invalid(
                &origin,
                format!(
                    "events: '{unknown}' is not one of {}",
                    WEBHOOK_EVENTS.join(", ")
                ),
            ));
        }
        webhooks.push(WebhookSettings {
            url,
            secrets,
            inline_secret: inline,
            events,
            callers: webhook.callers,
        });
    }
    Ok(webhooks)
}

/// The HMAC key of a Standard Webhooks secret (`whsec_` and base64), if it is one.
pub fn signing_key(secret: &str) -> Option<Vec<u8>> {
    let encoded = secret.strip_prefix("whsec_")?;
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .filter(|key| !key.is_empty())
}
