//! `GET /tools`: the tools the agent has now, with their source and state, and the MCP servers
//! they come from.

use actix_web::HttpResponse;
use actix_web::web::Data;
use agent_core::{McpServerState, McpServerStatus, ToolSource};
use serde::Serialize;
use serde_json::Value;

use crate::turn::Turns;

/// `GET /tools`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ToolList {
    /// The built-in and HTTP tools, then each MCP server's listed tools.
    tools: Vec<ToolView>,
    /// The configured MCP servers (`[[mcp_servers]]`), in configuration order.
    mcp_servers: Vec<McpServerView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ToolView {
    /// The name the model calls it by (an MCP tool's is `<prefix>__<tool>`).
    name: String,
    description: String,
    source: SourceKind,
    /// The MCP server it comes from.
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<String>,
    /// The MCP server's own name for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    original_name: Option<String>,
    state: ToolState,
    /// Why it is `left_out` or `unavailable`.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// JSON Schema of its arguments (fixed tools; an MCP tool's is its server's `inputSchema`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    parameters: Option<Value>,
}

#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
enum SourceKind {
    Builtin,
    Http,
    Mcp,
}

#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
enum ToolState {
    /// Offered to the model, and its source answers.
    Available,
    /// Offered to the model, but its MCP server is not connected now: calls get an error.
    Unavailable,
    /// Not offered: its name is taken by another tool, or its schema is invalid.
    LeftOut,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct McpServerView {
    name: String,
    state: ServerState,
    /// Why it is `down` (the last attempt's error; it is retried with backoff).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Readiness fails while it is not connected (otherwise it is reported degraded).
    required: bool,
    /// Tools listed (after the configured allowlist).
    tools: usize,
}

#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
enum ServerState {
    Connecting,
    Connected,
    Down,
}

/// Every tool of the deployment now (whichever agents have it: `GET /agents/{id}` says which):
/// their source (`builtin`, `http`, `mcp`) and state, and the MCP servers with their connection
/// state.
#[utoipa::path(
    get,
    path = "/tools",
    tag = "operations",
    responses((status = 200, body = ToolList))
)]
pub(crate) async fn list_tools(turns: Data<Turns>) -> HttpResponse {
    let registry = turns.agents.all_tools();
    let mut tools: Vec<ToolView> = registry
        .fixed()
        .map(|(spec, source)| ToolView {
            name: spec.name.clone(),
            description: spec.description.clone(),
            source: match source {
                ToolSource::Http => SourceKind::Http,
                ToolSource::Builtin | ToolSource::Mcp { .. } => SourceKind::Builtin,
            },
            server: None,
            original_name: None,
            state: ToolState::Available,
            reason: None,
            parameters: Some(spec.parameters.clone()),
        })
        .collect();
    let servers = registry.mcp().map(|mcp| mcp.status()).unwrap_or_default();
    let offered = registry.current();
    for server in &servers {
        tools.extend(mcp_tools(server, offered.specs()));
    }
    HttpResponse::Ok().json(ToolList {
        tools,
        mcp_servers: servers.iter().map(server_view).collect(),
    })
}

fn mcp_tools<'a>(
    server: &'a McpServerStatus,
    offered: &'a [agent_core::ToolSpec],
) -> impl Iterator<Item = ToolView> + 'a {
    let connected = server.state == McpServerState::Connected;
    server.tools.iter().map(move |tool| {
        let spec = offered.iter().find(|spec| spec.name == tool.name);
        let (state, reason) = match (&tool.left_out, connected) {
            (Some(reason), _) => (ToolState::LeftOut, Some(reason.clone())),
            (None, true) => (ToolState::Available, None),
            (None, false) => (
                ToolState::Unavailable,
                Some(format!("MCP server {} is not connected", server.name)),
            ),
        };
        ToolView {
            name: tool.name.clone(),
            description: tool.description.clone(),
            source: SourceKind::Mcp,
            server: Some(server.name.clone()),
            original_name: Some(tool.original.clone()),
            state,
            reason,
            parameters: spec.map(|spec| spec.parameters.clone()),
        }
    })
}

fn server_view(server: &McpServerStatus) -> McpServerView {
    let (state, error) = match &server.state {
        McpServerState::Connecting => (ServerState::Connecting, None),
        McpServerState::Connected => (ServerState::Connected, None),
        McpServerState::Down { error } => (ServerState::Down, Some(error.clone())),
    };
    McpServerView {
        name: server.name.clone(),
        state,
        error,
        required: server.required,
        tools: server.tools.len(),
    }
}
