//! Operator-declared MCP servers: `[[mcp_servers]]` tables in the TOML file, validated into
//! [`McpServerSettings`]. Only these URLs are ever contacted for MCP tools (Streamable HTTP);
//! header values given as `{ file = "/path" }` are secrets read from files.

use std::collections::BTreeMap;

use figment::Figment;
use serde::Deserialize;

use crate::approval::{self, RawApproval};
use crate::error::ConfigError;
use crate::keys;
use crate::settings::McpServerSettings;
use crate::tables::{RawHeader, bounded, check_name, duration, headers, http_url, invalid, read};

/// The key of the server tables in the file.
pub(crate) const FILE_KEY: &str = "mcp_servers";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    name: String,
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, RawHeader>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    connect_timeout: Option<String>,
    #[serde(default)]
    tools: Option<Vec<String>>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    max_result_bytes: Option<u64>,
    #[serde(default)]
    refresh_interval: Option<String>,
    #[serde(default)]
    require_approval: Option<RawApproval>,
}

/// `max_result_bytes` of a server that sets none: `http_tool_defaults.max_response_bytes`.
pub(crate) fn load(
    figment: &Figment,
    file: &str,
    default_max_result_bytes: usize,
) -> Result<Vec<McpServerSettings>, ConfigError> {
    let raw: Vec<RawServer> = read(figment, FILE_KEY, file)?;
    let mut servers: Vec<McpServerSettings> = Vec::with_capacity(raw.len());
    for (index, server) in raw.into_iter().enumerate() {
        let origin = format!("{FILE_KEY}[{index}] ({}) in {file}", server.name);
        check_name(&origin, "name", &server.name)?;
        let prefix = server.prefix.unwrap_or_else(|| server.name.clone());
        check_name(&origin, "prefix", &prefix)?;
        if servers.iter().any(|other| other.name == server.name) {
            return Err(invalid(&origin, "another MCP server has the same name"));
        }
        if let Some(other) = servers.iter().find(|other| other.prefix == prefix) {
            return Err(invalid(
                &origin,
                format!(
                    "MCP server {} has the same prefix '{prefix}': their tools' names would collide",
                    other.name
                ),
            ));
        }
        if let Some(tools) = &server.tools
            && let Some(empty) = tools.iter().position(String::is_empty)
        {
            return Err(invalid(&origin, format!("tools[{empty}] is empty")));
        }
        let max_result_bytes = bounded(
            &origin,
            &keys::MCP_SERVER_MAX_RESULT_BYTES,
            server.max_result_bytes,
            default_max_result_bytes as u64,
        )?;
        let refresh_interval = duration(
            &origin,
            &keys::MCP_SERVER_REFRESH_INTERVAL,
            server.refresh_interval,
            None,
        )?;
        let require_approval = approval::parse(&origin, server.require_approval, None)?;
        servers.push(McpServerSettings {
            url: http_url(&origin, &server.url)?,
            headers: headers(&origin, server.headers)?,
            timeout: duration(&origin, &keys::MCP_SERVER_TIMEOUT, server.timeout, None)?,
            connect_timeout: duration(
                &origin,
                &keys::MCP_SERVER_CONNECT_TIMEOUT,
                server.connect_timeout,
                None,
            )?,
            tools: server.tools,
            prefix,
            required: server.required,
            max_result_bytes: usize::try_from(max_result_bytes).unwrap_or(usize::MAX),
            refresh_interval,
            require_approval,
            name: server.name,
        });
    }
    Ok(servers)
}
