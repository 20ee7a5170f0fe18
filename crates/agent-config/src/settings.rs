//! The typed settings the rest of the service receives. Every value here has been validated.

use std::time::Duration;

use secrecy::SecretString;

use crate::agents::{AgentSettings, ModelEntry};
use crate::approval::RequireApproval;
use url::Url;

pub use crate::keys::{
    ApiValues, ContextSettings, HealthSettings, HttpToolDefaults, ModelValues, OpenAiApiValues,
    RateLimitSettings, RunSettings, ServerSettings, StorageSettings, TurnSettings, WebhookDelivery,
};

impl StorageSettings {
    /// How long idle sessions are kept; None: forever (`storage.session_retention` 0).
    pub fn retention(&self) -> Option<Duration> {
        Some(self.session_retention).filter(|retention| !retention.is_zero())
    }
}

/// Everything the service is configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub profile: Profile,
    pub log: LogSettings,
    /// OTLP trace export; `None` when off (no endpoint, or `ENABLE_TRACING=false`).
    pub traces: Option<TraceSettings>,
    /// `ENABLE_STREAMING`: whether `POST /agent/stream` is served.
    pub enable_streaming: bool,
    /// `AGENT_API_KEYS`: bearer keys accepted by the API, each with its caller's name when given;
    /// empty means no authentication.
    pub api_keys: Vec<ApiKey>,
    pub api: ApiSettings,
    pub openai_api: OpenAiApiSettings,
    pub rate_limit: RateLimitSettings,
    pub server: ServerSettings,
    pub model: ModelSettings,
    pub turn: TurnSettings,
    /// The context policy of an agent that has none of its own.
    pub context: ContextSettings,
    pub runs: RunSettings,
    /// Operator-declared HTTP tools (from the TOML file only).
    pub http_tools: Vec<HttpToolSettings>,
    /// `[builtin_tools] require_approval` in the file: which built-in tools wait for the
    /// client's approval (by name).
    pub builtin_approval: RequireApproval,
    /// `[[agents]]` in the file: the agents served (none: one agent of the global settings).
    pub agents: Vec<AgentSettings>,
    /// `[[models]]` in the file: the models the agents' chains may name.
    pub models: Vec<ModelEntry>,
    /// `default_agent`: the agent of a request that names none.
    pub default_agent: Option<String>,
    /// `[[mcp_servers]]` tables in the file: MCP servers whose tools the agent may call.
    pub mcp_servers: Vec<McpServerSettings>,
    /// `[[webhooks]]` tables in the file: where background runs' terminal events are posted.
    pub webhooks: Vec<WebhookSettings>,
    pub webhook_delivery: WebhookDelivery,
    pub storage: StorageSettings,
    pub health: HealthSettings,
}

impl Settings {
    /// The ids of the agents served: the `[[agents]]` entries', else the one agent of the
    /// global settings (`openai_api.model_id`).
    pub fn agent_ids(&self) -> Vec<&str> {
        if self.agents.is_empty() {
            vec![self.openai_api.model_id.as_str()]
        } else {
            self.agents.iter().map(|agent| agent.id.as_str()).collect()
        }
    }
}

/// An API key, and the name of the caller it identifies (`name:key`). Keys sharing a name are one
/// caller, so a key can be rotated without losing access; a key without a name is a caller of its
/// own.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub caller: Option<String>,
    pub secret: SecretString,
}

impl ApiKey {
    /// What a caller name may be: 1 to 64 of `A-Z a-z 0-9 . _ -`.
    pub fn is_caller_name(name: &str) -> bool {
        (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"._-".contains(&byte))
    }
}

/// `AGENT_PROFILE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Falls back to in-memory storage and the offline model when they are not configured.
    Dev,
    /// Requires every dependency to be configured; never falls back.
    Production,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// JSON when standard output is not a terminal, readable text when it is.
    Auto,
    Json,
    Pretty,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    /// `ENABLE_TRACING=true`: one extra log line per closed span, with its timings.
    pub enable_tracing: bool,
    /// A failure's cause chain is logged once per distinct failure per this long (zero: always).
    pub repeat_interval: Duration,
}

/// Where and how traces are exported (OTLP over HTTP with protobuf bodies).
#[derive(Debug, Clone)]
pub struct TraceSettings {
    /// The URL spans are posted to (`…/v1/traces`).
    pub endpoint: Url,
    /// Sent with every export; values are secrets (collector credentials).
    pub headers: Vec<(String, SecretString)>,
    /// Bound on one export request.
    pub timeout: Duration,
    pub service_name: String,
    /// More resource attributes, in the order given.
    pub resource_attributes: Vec<(String, String)>,
    pub sampler: TraceSampler,
    /// Spans waiting for export; beyond it new spans are dropped.
    pub max_queue_size: usize,
    /// Whether message and tool contents are recorded in spans.
    pub capture_content: bool,
}

/// Which traces are recorded (`OTEL_TRACES_SAMPLER` and its argument).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceSampler {
    /// Follow the sampled flag of an incoming `traceparent`; `root` decides for new traces.
    pub parent_based: bool,
    pub root: SamplerRoot,
}

/// How a new trace is sampled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerRoot {
    AlwaysOn,
    AlwaysOff,
    /// Keep this fraction of traces, chosen by trace id.
    Ratio(f64),
}

/// Limits and behaviour of the HTTP API: the declared keys ([`ApiValues`], read through this
/// type), and what is built from several of them.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub values: ApiValues,
    /// CORS for browser clients; None: off.
    pub cors: Option<CorsSettings>,
    /// Callers who may read every caller's usage.
    pub usage_readers: Vec<String>,
    /// Daily token quotas per caller.
    pub quotas: TokenQuotas,
    /// Whether `GET /docs` is served (and `/openapi.json` without a key).
    pub docs_page: bool,
    /// Whether `GET /playground` (the chat page) is served.
    pub playground_page: bool,
}

impl std::ops::Deref for ApiSettings {
    type Target = ApiValues;

    fn deref(&self) -> &ApiValues {
        &self.values
    }
}

/// The OpenAI-compatible API (`/v1/*`): its keys ([`OpenAiApiValues`], read through this type).
#[derive(Debug, Clone)]
pub struct OpenAiApiSettings {
    pub values: OpenAiApiValues,
    /// Whether a request's own `system`/`developer` messages are kept (after the server's
    /// system prompt) or refused.
    pub follow_system_messages: bool,
}

impl std::ops::Deref for OpenAiApiSettings {
    type Target = OpenAiApiValues;

    fn deref(&self) -> &OpenAiApiValues {
        &self.values
    }
}

/// Tokens each caller may use per UTC day.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenQuotas {
    /// For callers without their own; 0: none.
    pub default: u64,
    /// Named callers' own quotas (0: none for that caller).
    pub callers: Vec<(String, u64)>,
}

impl TokenQuotas {
    /// The quota of `caller`, if it has one.
    pub fn of(&self, caller: &str) -> Option<u64> {
        let tokens = self
            .callers
            .iter()
            .find(|(name, _)| name == caller)
            .map_or(self.default, |(_, tokens)| *tokens);
        (tokens > 0).then_some(tokens)
    }

    /// Whether any caller has a quota.
    pub fn any(&self) -> bool {
        self.default > 0 || self.callers.iter().any(|(_, tokens)| *tokens > 0)
    }
}

/// Which browser origins may call the API, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsSettings {
    /// Exact origins (`scheme://host[:port]`); empty means any (`*`).
    pub origins: Vec<String>,
    pub methods: Vec<String>,
    pub headers: Vec<String>,
    pub allow_credentials: bool,
    pub max_age: Duration,
}

impl CorsSettings {
    /// Whether a browser at `origin` may call the API.
    pub fn allows(&self, origin: &str) -> bool {
        self.origins.is_empty() || self.origins.iter().any(|allowed| allowed == origin)
    }
}

/// The model: its keys ([`ModelValues`], read through this type) and the provider they make.
#[derive(Debug, Clone)]
pub struct ModelSettings {
    pub values: ModelValues,
    pub provider: ModelProvider,
}

impl std::ops::Deref for ModelSettings {
    type Target = ModelValues;

    fn deref(&self) -> &ModelValues {
        &self.values
    }
}

/// An HTTP tool declared by the operator.
#[derive(Debug, Clone)]
pub struct HttpToolSettings {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments.
    pub parameters: serde_json::Value,
    pub url: Url,
    /// `GET` or `POST`.
    pub method: String,
    /// Header values; those given as `{ file = "..." }` are read from the file.
    pub headers: Vec<(String, SecretString)>,
    pub timeout: Duration,
    pub max_response_bytes: usize,
    /// Whether a call to it waits for the client's approval.
    pub require_approval: RequireApproval,
}

/// Which model the agent talks to.
#[derive(Debug, Clone)]
pub enum ModelProvider {
    /// Any OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp, ...).
    OpenAiCompatible {
        /// Includes the `/v1` path segment.
        base_url: Url,
        /// Optional: local servers often need none.
        api_key: Option<SecretString>,
    },
    /// The built-in deterministic model; dev profile only.
    Offline,
}

/// A webhook endpoint: the terminal events of background runs are posted to it, signed per the
/// Standard Webhooks spec.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub url: Url,
    /// `whsec_` secrets; each signs every delivery (`v1,` signatures, for rotation).
    pub secrets: Vec<SecretString>,
    /// A secret was written in the file itself (warned about in production).
    pub inline_secret: bool,
    /// The event types it gets.
    pub events: Vec<String>,
    /// Only these callers' runs, when set.
    pub callers: Option<Vec<String>>,
}

/// An MCP server (Streamable HTTP) whose tools the agent may call.
#[derive(Debug, Clone)]
pub struct McpServerSettings {
    /// 1 to 64 of `A-Z a-z 0-9 _ -`; its readiness check is `mcp:<name>`.
    pub name: String,
    pub url: Url,
    /// Sent with every request (bearer tokens): secrets.
    pub headers: Vec<(String, SecretString)>,
    /// Bound on one tool call.
    pub timeout: Duration,
    /// Bound on connecting and initialising the session.
    pub connect_timeout: Duration,
    /// Only these of its tools, when set.
    pub tools: Option<Vec<String>>,
    /// Its tools are named `<prefix>__<tool>` (default: the name).
    pub prefix: String,
    /// Readiness fails while it is unavailable (otherwise it is reported degraded).
    pub required: bool,
    /// The tool message is cut to this many bytes (default: `http_tool_defaults.max_response_bytes`).
    pub max_result_bytes: usize,
    /// How often its tool list is fetched again, besides its change notifications.
    pub refresh_interval: Duration,
    /// Which of its tools (by its own names for them) wait for the client's approval.
    pub require_approval: RequireApproval,
}
