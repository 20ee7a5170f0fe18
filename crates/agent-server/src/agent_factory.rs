//! Builds the agent from the settings: the model (an OpenAI-compatible server, or the offline
//! model in the dev profile), the built-in and operator-declared tools (HTTP tools, and MCP
//! servers' tools), and the turn limits.

use std::sync::Arc;

use agent_config::{HttpToolSettings, ModelProvider, Settings};
use agent_core::{
    Agent, AgentLimits, ChatModel, HttpTool, HttpToolMethod, HttpToolOptions, McpServerOptions,
    McpTools, OfflineModel, OpenAiModel, OpenAiOptions, RetryPolicy, ToolRegistry,
};

use agent_core::metrics::ModelMetrics;

use crate::error::StartupError;

/// The agent, its model client recording into `model_metrics`, with the MCP servers' tools when
/// there are any (one [`McpTools`] per process, shared by every worker's agent).
pub(crate) fn build(
    settings: &Settings,
    model_metrics: &ModelMetrics,
    mcp: Option<&Arc<McpTools>>,
) -> Result<Agent, StartupError> {
    let model = &settings.model;
    let chat_model: Arc<dyn ChatModel> = match &model.provider {
        ModelProvider::Offline => Arc::new(OfflineModel),
        ModelProvider::OpenAiCompatible { base_url, api_key } => Arc::new(
            OpenAiModel::new(
                OpenAiOptions {
                    base_url: base_url.to_string(),
                    api_key: api_key.clone(),
                    model: model.name.clone(),
                    temperature: model.temperature,
                    max_tokens: model.max_tokens,
                    request_timeout: model.request_timeout,
                    retry: RetryPolicy {
                        max_attempts: model.max_attempts,
                        base_delay: model.retry_base_delay,
                        max_delay: model.retry_max_delay,
                        budget: model.retry_budget,
                    },
                },
                model_metrics.clone(),
            )
            .map_err(StartupError::Model)?,
        ),
    };
    let turn = &settings.turn;
    let mut tools = fixed_tools(settings)?;
    if let Some(mcp) = mcp {
        tools.attach(Arc::clone(mcp));
    }
    let limits = AgentLimits {
        max_steps: turn.max_steps,
        max_parallel_tools: turn.max_parallel_tools,
        turn_token_budget: turn.turn_token_budget,
        session_token_budget: turn.session_token_budget,
        turn_deadline: turn.turn_deadline,
    };
    Ok(Agent::new(
        chat_model,
        Arc::new(tools),
        limits,
        Some(turn.system_prompt.clone()),
    )
    .with_content_capture(
        settings
            .traces
            .as_ref()
            .is_some_and(|traces| traces.capture_content),
    ))
}

/// The built-in and HTTP tools.
pub(crate) fn fixed_tools(settings: &Settings) -> Result<ToolRegistry, StartupError> {
    let mut tools =
        ToolRegistry::with_builtins(settings.turn.tool_timeout).map_err(StartupError::Tools)?;
    for declared in &settings.http_tools {
        let tool = HttpTool::new(http_tool_options(declared)).map_err(StartupError::Tools)?;
        tools
            .register(Arc::new(tool))
            .map_err(StartupError::Tools)?;
        tracing::debug!(tool = %declared.name, url = %declared.url, "registered HTTP tool");
    }
    Ok(tools)
}

/// The built-in tools' names (the fixed tools but the HTTP ones).
pub(crate) fn builtin_names(settings: &Settings) -> Result<Vec<String>, StartupError> {
    let http: Vec<&str> = settings
        .http_tools
        .iter()
        .map(|tool| tool.name.as_str())
        .collect();
    Ok(fixed_tools(settings)?
        .names()
        .filter(|name| !http.contains(name))
        .map(str::to_owned)
        .collect())
}

/// Starts the MCP servers' connections (see [`McpTools`]); `None` without `[[mcp_servers]]`.
pub(crate) fn start_mcp(
    settings: &Settings,
    recorder: Arc<dyn metrics::Recorder + Send + Sync>,
) -> Result<Option<Arc<McpTools>>, StartupError> {
    if settings.mcp_servers.is_empty() {
        return Ok(None);
    }
    let reserved = fixed_tools(settings)?.names().map(str::to_owned).collect();
    let servers = settings
        .mcp_servers
        .iter()
        .map(|server| McpServerOptions {
            name: server.name.clone(),
            url: server.url.clone(),
            headers: server.headers.clone(),
            timeout: server.timeout,
            connect_timeout: server.connect_timeout,
            tools: server.tools.clone(),
            prefix: server.prefix.clone(),
            required: server.required,
            max_result_bytes: server.max_result_bytes,
            refresh_interval: server.refresh_interval,
        })
        .collect();
    Ok(Some(McpTools::start(servers, reserved, Some(recorder))))
}

fn http_tool_options(declared: &HttpToolSettings) -> HttpToolOptions {
    HttpToolOptions {
        name: declared.name.clone(),
        description: declared.description.clone(),
        parameters: declared.parameters.clone(),
        url: declared.url.clone(),
        method: if declared.method == "GET" {
            HttpToolMethod::Get
        } else {
            HttpToolMethod::Post
        },
        headers: declared.headers.clone(),
        timeout: declared.timeout,
        max_response_bytes: declared.max_response_bytes,
    }
}
