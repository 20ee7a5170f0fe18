//! Operator-declared HTTP tools: `[[http_tools]]` tables in the TOML file, validated into
//! [`HttpToolSettings`]. Header values given as `{ file = "/path" }` are secrets read from files.

use std::collections::BTreeMap;

use figment::Figment;
use serde::Deserialize;

use crate::approval::{self, RawApproval};
use crate::error::ConfigError;
use crate::keys;
use crate::settings::{HttpToolDefaults, HttpToolSettings};
use crate::tables::{RawHeader, bounded, check_name, duration, headers, http_url, invalid, read};

/// The key of the tool tables in the file.
pub(crate) const FILE_KEY: &str = "http_tools";

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
    max_response_bytes: Option<u64>,
    #[serde(default)]
    headers: BTreeMap<String, RawHeader>,
    #[serde(default)]
    require_approval: Option<RawApproval>,
}

pub(crate) fn load(
    figment: &Figment,
    file: &str,
    defaults: HttpToolDefaults,
) -> Result<Vec<HttpToolSettings>, ConfigError> {
    let raw: Vec<RawTool> = read(figment, FILE_KEY, file)?;
    let mut tools: Vec<HttpToolSettings> = Vec::with_capacity(raw.len());
    for (index, tool) in raw.into_iter().enumerate() {
        let origin = format!("{FILE_KEY}[{index}] ({}) in {file}", tool.name);
        check_name(&origin, "name", &tool.name)?;
        if tools.iter().any(|other| other.name == tool.name) {
            return Err(invalid(&origin, "another tool has the same name"));
        }
        let url = http_url(&origin, &tool.url)?;
        let method = tool
            .method
            .unwrap_or_else(|| defaults.method.to_owned())
            .to_ascii_uppercase();
        if !matches!(method.as_str(), "GET" | "POST") {
            return Err(invalid(
                &origin,
                format!("method '{method}' is not GET or POST"),
            ));
        }
        let parameters = match tool.parameters {
            serde_json::Value::String(text) => serde_json::from_str(&text)
                .map_err(|error| invalid(&origin, format!("parameters is not JSON: {error}")))?,
            value => value,
        };
        if !parameters.is_object() {
            return Err(invalid(&origin, "parameters must be a JSON Schema object"));
        }
        let timeout = duration(
            &origin,
            &keys::HTTP_TOOL_TIMEOUT,
            tool.timeout,
            Some(defaults.timeout),
        )?;
        let max_response_bytes = bounded(
            &origin,
            &keys::HTTP_TOOL_MAX_RESPONSE_BYTES,
            tool.max_response_bytes,
            defaults.max_response_bytes as u64,
        )?;
        let headers = headers(&origin, tool.headers)?;
        let require_approval =
            approval::parse(&origin, tool.require_approval, Some(&[tool.name.as_str()]))?;
        tools.push(HttpToolSettings {
            name: tool.name,
            description: tool.description,
            parameters,
            url,
            method,
            headers,
            timeout,
            max_response_bytes: usize::try_from(max_response_bytes).unwrap_or(usize::MAX),
            require_approval,
        });
    }
    Ok(tools)
}
