//! Operator-declared HTTP tools: `[[http_tools]]` tables in the TOML file, validated into
//! [`HttpToolSettings`]. Header values given as `{ file = "/path" }` are secrets read from files.

use std::collections::BTreeMap;
use std::time::Duration;

use figment::Figment;
use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

use crate::error::ConfigError;
use crate::settings::HttpToolSettings;

/// The key of the tool tables in the file.
pub(crate) const FILE_KEY: &str = "http_tools";

/// What a tool gets when it does not set its own (from `[http_tool_defaults]`).
pub(crate) struct Defaults {
    pub(crate) method: String,
    pub(crate) timeout: Duration,
    pub(crate) max_response_bytes: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTool {
    name: String,
    description: String,
    url: String,
    parameters: serde_json::Value,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    max_response_bytes: Option<usize>,
    #[serde(default)]
    headers: BTreeMap<String, RawHeader>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawHeader {
    Plain(String),
    File { file: String },
}

pub(crate) fn load(
    figment: &Figment,
    file: &str,
    defaults: Defaults,
) -> Result<Vec<HttpToolSettings>, ConfigError> {
    let Ok(value) = figment.find_value(FILE_KEY) else {
        return Ok(Vec::new());
    };
    let invalid = |origin: String, problem: String| ConfigError::Invalid { origin, problem };
    let raw: Vec<RawTool> = value.deserialize().map_err(|error| {
        invalid(
            format!("{FILE_KEY} in {file}"),
            format!("expected [[{FILE_KEY}]] tables: {error}"),
        )
    })?;
    let mut tools: Vec<HttpToolSettings> = Vec::with_capacity(raw.len());
    for (index, tool) in raw.into_iter().enumerate() {
        let origin = format!("{FILE_KEY}[{index}] ({}) in {file}", tool.name);
        let valid_name = (1..=64).contains(&tool.name.len())
            && tool
                .name
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"_-".contains(&byte));
        if !valid_name {
            return Err(invalid(
                origin,
                "name must be 1 to 64 of A-Z, a-z, 0-9, '_' and '-'".into(),
            ));
        }
        if tools.iter().any(|other| other.name == tool.name) {
            return Err(invalid(origin, "another tool has the same name".into()));
        }
        let url = Url::parse(&tool.url)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
            .ok_or_else(|| {
                invalid(
                    origin.clone(),
                    format!("url '{}' is not an http(s) URL", tool.url),
                )
            })?;
        let method = tool
            .method
            .unwrap_or_else(|| defaults.method.clone())
            .to_ascii_uppercase();
        if !matches!(method.as_str(), "GET" | "POST") {
            return Err(invalid(
                origin,
                format!("method '{method}' is not GET or POST"),
            ));
        }
        let parameters = match tool.parameters {
            serde_json::Value::String(text) => serde_json::from_str(&text).map_err(|error| {
                invalid(origin.clone(), format!("parameters is not JSON: {error}"))
            })?,
            value => value,
        };
        if !parameters.is_object() {
            return Err(invalid(
                origin,
                "parameters must be a JSON Schema object".into(),
            ));
        }
        let timeout = match tool.timeout {
            None => defaults.timeout,
            Some(text) => humantime::parse_duration(&text).map_err(|_| {
                invalid(
                    origin.clone(),
                    format!("timeout '{text}' is not a duration"),
                )
            })?,
        };
        let mut headers = Vec::new();
        for (name, header) in tool.headers {
            let value = match header {
                RawHeader::Plain(value) => value,
                RawHeader::File { file: path } => std::fs::read_to_string(&path)
                    .map(|text| text.trim_end_matches(['\r', '\n']).to_owned())
                    .map_err(|error| {
                        invalid(
                            origin.clone(),
                            format!("header {name}: cannot read {path}: {error}"),
                        )
                    })?,
            };
            headers.push((name, SecretString::from(value)));
        }
        tools.push(HttpToolSettings {
            name: tool.name,
            description: tool.description,
            parameters,
            url,
            method,
            headers,
            timeout,
            max_response_bytes: tool
                .max_response_bytes
                .unwrap_or(defaults.max_response_bytes),
        });
    }
    Ok(tools)
}
