//! Builds the agent from the settings: the model (an OpenAI-compatible server, or the offline
//! model in the dev profile), the built-in and operator-declared tools, and the turn limits.

use std::sync::Arc;

use agent_config::{HttpToolSettings, ModelProvider, Settings};
use agent_core::{
    Agent, AgentLimits, ChatModel, HttpTool, HttpToolMethod, HttpToolOptions, OfflineModel,
    OpenAiModel, OpenAiOptions, RetryPolicy, ToolRegistry,
};

use agent_core::metrics::ModelMetrics;

use crate::error::StartupError;

/// The agent, its model client recording into `model_metrics`.
pub(crate) fn build(
    settings: &Settings,
    model_metrics: &ModelMetrics,
) -> Result<Agent, StartupError> {
    let model = settings.model.clone();
    let chat_model: Arc<dyn ChatModel> = match model.provider {
        ModelProvider::Offline => Arc::new(OfflineModel),
        ModelProvider::OpenAiCompatible { base_url, api_key } => Arc::new(
            OpenAiModel::new(
                OpenAiOptions {
                    base_url: base_url.to_string(),
                    api_key,
                    model: model.name,
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
    let mut tools = ToolRegistry::with_builtins(turn.tool_timeout).map_err(StartupError::Tools)?;
    for declared in &settings.http_tools {
        let tool = HttpTool::new(http_tool_options(declared)).map_err(StartupError::Tools)?;
        tools
            .register(Arc::new(tool))
            .map_err(StartupError::Tools)?;
        tracing::info!(tool = %declared.name, url = %declared.url, "registered HTTP tool");
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
    ))
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
