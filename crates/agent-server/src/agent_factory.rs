//! Builds the agents from the settings: each one's model chain (OpenAI-compatible servers, or
//! the offline model in the dev profile), its tools (built-in, operator-declared HTTP tools and
//! MCP servers' tools, limited to its patterns), its instructions and its turn limits.

use std::collections::HashMap;
use std::sync::Arc;

use agent_config::{
    AgentSettings, ContextSettings, HttpToolSettings, ModelEntry, ModelProvider, Settings,
};
use agent_core::{
    Agent, AgentLimits, AgentName, ChatModel, ContextPolicy, ContextStrategy, FallbackObserver,
    HttpTool, HttpToolMethod, HttpToolOptions, McpServerOptions, McpTools, ModelChain, ModelError,
    OfflineModel, OpenAiModel, OpenAiOptions, RetryPolicy, ToolFilter, ToolRegistry,
};

use agent_core::metrics::ModelMetrics;

use crate::agents::{Agents, ServedAgent};
use crate::error::StartupError;

/// The agents (one per `[[agents]]` entry, or one of the global settings), their model clients
/// recording into `model_metrics` and their fallbacks into `recorder`, with the MCP servers'
/// tools when there are any (one [`McpTools`] per process, shared by every worker's agents).
pub(crate) fn build(
    settings: &Settings,
    model_metrics: &ModelMetrics,
    recorder: Arc<dyn metrics::Recorder + Send + Sync>,
    mcp: Option<&Arc<McpTools>>,
) -> Result<Agents, StartupError> {
    let mut tools = fixed_tools(settings)?;
    if let Some(mcp) = mcp {
        tools.attach(Arc::clone(mcp));
    }
    let all_tools = Arc::new(tools);
    let mut clients = Clients {
        settings,
        metrics: model_metrics,
        built: HashMap::new(),
    };
    let implicit;
    let declared: &[AgentSettings] = if settings.agents.is_empty() {
        implicit = [implicit_agent(settings)];
        &implicit
    } else {
        &settings.agents
    };
    let mut list = Vec::with_capacity(declared.len());
    for declared in declared {
        list.push(Arc::new(served(
            settings,
            declared,
            &all_tools,
            &mut clients,
            &recorder,
        )?));
    }
    let default = settings
        .default_agent
        .as_deref()
        .and_then(|id| list.iter().position(|agent| agent.id == id))
        .unwrap_or(0);
    Ok(Agents::new(list, default, all_tools))
}

/// The one agent of a deployment without `[[agents]]`: the global settings' (its id is the
/// model id the OpenAI-compatible API presents).
fn implicit_agent(settings: &Settings) -> AgentSettings {
    let id = settings.openai_api.model_id.clone();
    AgentSettings {
        name: id.clone(),
        id,
        description: String::new(),
        instructions: None,
        model: None,
        fallbacks: Vec::new(),
        tools: None,
        max_steps: None,
        turn_token_budget: None,
        turn_deadline: None,
        temperature: None,
        callers: None,
        context: settings.context.clone(),
    }
}

fn served(
    settings: &Settings,
    declared: &AgentSettings,
    all_tools: &Arc<ToolRegistry>,
    clients: &mut Clients<'_>,
    recorder: &Arc<dyn metrics::Recorder + Send + Sync>,
) -> Result<ServedAgent, StartupError> {
    let models: Vec<String> = declared
        .chain(&settings.model.name)
        .map(str::to_owned)
        .collect();
    let mut chain = Vec::with_capacity(models.len());
    for name in &models {
        chain.push((name.clone(), clients.model(name)?));
    }
    let observer = Arc::new(FallbackCounter {
        agent: declared.id.clone(),
        recorder: Arc::clone(recorder),
    });
    let chain = Arc::new(ModelChain::new(chain, Some(observer)));
    let model: Arc<dyn ChatModel> = chain.clone();
    let tools = match &declared.tools {
        None => Arc::clone(all_tools),
        Some(patterns) => {
            let problem = |problem: String| StartupError::Agent {
                agent: declared.id.clone(),
                problem,
            };
            let filter = ToolFilter::new(patterns).map_err(|error| problem(error.to_string()))?;
            let fixed: Vec<&str> = all_tools.names().collect();
            let prefixes: Vec<&str> = settings
                .mcp_servers
                .iter()
                .map(|server| server.prefix.as_str())
                .collect();
            if let Some(unknown) = filter.unmatched(&fixed, &prefixes).next() {
                return Err(problem(format!(
                    "tools: '{unknown}' names no tool (built-in and HTTP tools: {}; MCP tools \
                     are named <prefix>__<tool> for the prefixes: {})",
                    fixed.join(", "),
                    if prefixes.is_empty() {
                        "none".to_owned()
                    } else {
                        prefixes.join(", ")
                    }
                )));
            }
            Arc::new(all_tools.only(filter))
        }
    };
    let turn = &settings.turn;
    let limits = AgentLimits {
        max_steps: declared.max_steps.unwrap_or(turn.max_steps),
        max_parallel_tools: turn.max_parallel_tools,
        turn_token_budget: declared.turn_token_budget.unwrap_or(turn.turn_token_budget),
        session_token_budget: turn.session_token_budget,
        turn_deadline: declared.turn_deadline.unwrap_or(turn.turn_deadline),
    };
    let instructions = declared
        .instructions
        .clone()
        .unwrap_or_else(|| turn.system_prompt.clone());
    let agent = Agent::new(model, tools, limits, Some(instructions))
        .with_content_capture(
            settings
                .traces
                .as_ref()
                .is_some_and(|traces| traces.capture_content),
        )
        .with_name(AgentName {
            id: declared.id.clone(),
            name: declared.name.clone(),
        })
        .with_context(context_policy(&declared.context));
    let agent = match &declared.context.summarizer {
        Some(name) => agent.with_summarizer(clients.model(name)?),
        None => agent,
    };
    Ok(ServedAgent::new(declared.clone(), chain, agent))
}

/// The agent-core policy of an agent's context settings.
fn context_policy(context: &ContextSettings) -> ContextPolicy {
    ContextPolicy {
        max_input_tokens: context.max_input_tokens,
        // The settings accept only the strategies' names.
        strategy: ContextStrategy::parse(context.strategy).unwrap_or_default(),
        keep_recent_turns: context.keep_recent_turns,
        max_tool_result_tokens: context.max_tool_result_tokens,
    }
}

/// The model clients of one worker, one per model name whichever agents' chains name it.
struct Clients<'a> {
    settings: &'a Settings,
    metrics: &'a ModelMetrics,
    built: HashMap<String, Arc<dyn ChatModel>>,
}

impl Clients<'_> {
    /// The model a chain calls `name`: its `[[models]]` entry, else that model on the default
    /// model server.
    fn model(&mut self, name: &str) -> Result<Arc<dyn ChatModel>, StartupError> {
        if let Some(built) = self.built.get(name) {
            return Ok(Arc::clone(built));
        }
        let global = &self.settings.model;
        let retry = |max_attempts: Option<u32>| RetryPolicy {
            max_attempts: max_attempts.unwrap_or(global.max_attempts),
            base_delay: global.retry_base_delay,
            max_delay: global.retry_max_delay,
            budget: global.retry_budget,
        };
        let entry = self.settings.models.iter().find(|entry| entry.name == name);
        let options = match (entry, &global.provider) {
            (Some(entry), _) => Some(entry_options(entry, global, retry(entry.max_attempts))),
            (None, ModelProvider::Offline) => None,
            (None, ModelProvider::OpenAiCompatible { base_url, api_key }) => Some(OpenAiOptions {
                base_url: base_url.to_string(),
                api_key: api_key.clone(),
                headers: Vec::new(),
                model: name.to_owned(),
                temperature: global.temperature,
                max_tokens: global.max_tokens,
                request_timeout: global.request_timeout,
                retry: retry(None),
            }),
        };
        let model: Arc<dyn ChatModel> = match options {
            None => Arc::new(OfflineModel),
            Some(options) => Arc::new(
                OpenAiModel::new(options, self.metrics.clone()).map_err(StartupError::Model)?,
            ),
        };
        self.built.insert(name.to_owned(), Arc::clone(&model));
        Ok(model)
    }
}

fn entry_options(
    entry: &ModelEntry,
    global: &agent_config::ModelSettings,
    retry: RetryPolicy,
) -> OpenAiOptions {
    OpenAiOptions {
        base_url: entry.base_url.to_string(),
        api_key: entry.api_key.clone(),
        headers: entry.headers.clone(),
        model: entry.model.clone(),
        temperature: global.temperature,
        max_tokens: global.max_tokens,
        request_timeout: entry.request_timeout.unwrap_or(global.request_timeout),
        retry,
    }
}

/// Counts an agent's fallbacks in `agent_model_fallbacks_total{agent,from,to,reason}` (series
/// made as they happen: their labels are bounded by the configured chains).
struct FallbackCounter {
    agent: String,
    recorder: Arc<dyn metrics::Recorder + Send + Sync>,
}

impl std::fmt::Debug for FallbackCounter {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("FallbackCounter")
            .field("agent", &self.agent)
            .finish_non_exhaustive()
    }
}

impl FallbackObserver for FallbackCounter {
    fn fell_back(&self, from: &str, to: &str, reason: &ModelError) {
        crate::metrics::model_fallback(
            self.recorder.as_ref(),
            &self.agent,
            from,
            to,
            reason.kind(),
        );
    }
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
