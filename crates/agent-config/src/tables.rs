//! What the operator-declared tables of the TOML file (`[[http_tools]]`, `[[mcp_servers]]`)
//! share: their names, URLs, durations and header values, validated one way, with errors that
//! name the table entry.

use std::collections::BTreeMap;
use std::time::Duration;

use figment::Figment;
use secrecy::SecretString;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use url::Url;

use crate::error::ConfigError;
use crate::keys::{Key, Kind};

/// A header value: plain text, or `{ file = "/path" }`, a secret read from a file.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawHeader {
    Plain(String),
    File { file: String },
}

/// The `[[key]]` tables of `file` (none when it has none).
pub(crate) fn read<T: DeserializeOwned>(
    figment: &Figment,
    key: &str,
    file: &str,
) -> Result<Vec<T>, ConfigError> {
    let Ok(value) = figment.find_value(key) else {
        return Ok(Vec::new());
    };
    value.deserialize().map_err(|error| {
        invalid(
            &format!("{key} in {file}"),
            format!("expected [[{key}]] tables: {error}"),
        )
    })
}

/// An entry's problem, reported with where it is (`http_tools[0] (weather) in agent.toml`).
pub(crate) fn invalid(origin: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        origin: origin.to_owned(),
        problem: problem.into(),
    }
}

/// 1 to 64 of `A-Z a-z 0-9 _ -`: a tool name as OpenAI's function names allow it.
pub(crate) fn check_name(origin: &str, what: &str, name: &str) -> Result<(), ConfigError> {
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"_-".contains(&byte));
    if valid {
        Ok(())
    } else {
        Err(invalid(
            origin,
            format!("{what} must be 1 to 64 of A-Z, a-z, 0-9, '_' and '-'"),
        ))
    }
}

/// An `http(s)` URL with a host.
pub(crate) fn http_url(origin: &str, text: &str) -> Result<Url, ConfigError> {
    Url::parse(text)
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
        .ok_or_else(|| invalid(origin, format!("url '{text}' is not an http(s) URL")))
}

/// The entry's duration `field` (a humantime text), or `default` when unset (the field's
/// declared default when that is `None`), within the field's declared bounds.
pub(crate) fn duration(
    origin: &str,
    field: &Key,
    text: Option<String>,
    default: Option<Duration>,
) -> Result<Duration, ConfigError> {
    let what = field_name(field);
    let value = match (text, default) {
        (Some(text), _) => humantime::parse_duration(&text)
            .map_err(|_| invalid(origin, format!("{what} '{text}' is not a duration")))?,
        (None, Some(default)) => default,
        (None, None) => field
            .default
            .and_then(|text| humantime::parse_duration(text).ok())
            .unwrap_or_default(),
    };
    if let Kind::Duration { min, max } = field.kind
        && !(min..=max).contains(&value)
    {
        return Err(invalid(
            origin,
            format!(
                "{what} must be {} to {}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            ),
        ));
    }
    Ok(value)
}

/// The entry's whole-number `field`, or `default` when unset, within the field's bounds.
pub(crate) fn bounded(
    origin: &str,
    field: &Key,
    value: Option<u64>,
    default: u64,
) -> Result<u64, ConfigError> {
    let value = value.unwrap_or(default);
    match field.kind {
        Kind::Int { min, max } if !(min..=max).contains(&value) => Err(invalid(
            origin,
            format!("{} must be {min} to {max}", field_name(field)),
        )),
        _ => Ok(value),
    }
}

/// A field's name in its entry (`timeout` of `mcp_servers.timeout`).
fn field_name(field: &Key) -> &'static str {
    field.path.rsplit('.').next().unwrap_or(field.path)
}

/// Header values as secrets, those given as `{ file = ... }` read from their files.
pub(crate) fn headers(
    origin: &str,
    raw: BTreeMap<String, RawHeader>,
) -> Result<Vec<(String, SecretString)>, ConfigError> {
    let mut headers = Vec::with_capacity(raw.len());
    for (name, header) in raw {
        let value = match header {
            RawHeader::Plain(value) => value,
            RawHeader::File { file: path } => std::fs::read_to_string(&path)
                .map(|text| text.trim_end_matches(['\r', '\n']).to_owned())
                .map_err(|error| {
                    invalid(
                        origin,
                        format!("header {name}: cannot read {path}: {error}"),
                    )
                })?,
        };
        headers.push((name, SecretString::from(value)));
    }
    Ok(headers)
}
