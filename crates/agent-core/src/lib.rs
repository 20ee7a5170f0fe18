//! The agent: conversation types (`Message`, `ToolCall`, `Turn`), the `ChatModel` and `Tool`
//! ports, the OpenAI-compatible and offline models, and the bounded tool-calling loop.
//!
//! It knows no HTTP framework, no SQL and no Redis: it receives history and returns what a turn
//! produced. (The OpenAI client and HTTP tools make outbound HTTP calls; no server is here.)

mod agent;
mod backoff;
pub mod compaction;
pub mod context;
mod conversation;
mod error;
mod format;
pub mod metrics;
mod model;
mod model_chain;
mod offline;
mod openai;
mod session_id;
pub mod spans;
mod tokens;
mod tools;
pub mod trace_context;

pub use agent::{
    Agent, AgentEvent, AgentLimits, AgentName, Answer, ApprovalPolicy, Resume, TurnContext,
    TurnEvents, TurnRequest, TurnResult, Wait, WaitingCall, Waits, rejection,
};
pub use backoff::backoff;
pub use compaction::Compaction;
pub use context::{ContextPolicy, ContextStrategy};
pub use conversation::{Message, Role, TokenUsage, ToolCall, Turn};
pub use error::{AgentError, ModelError, ToolError, error_chain};
pub use format::{FormatError, JsonSchemaFormat, ResponseFormat, WireFormat};
pub use model::{
    ChatModel, ChatRequest, DeltaStream, ModelDelta, ModelIdentity, ModelReply, ReplyAssembler,
    ReplyMeta, Sampling, ToolSpec, is_function_name,
};
pub use model_chain::{FallbackObserver, ModelChain};
pub use offline::OfflineModel;
pub use openai::{OpenAiModel, OpenAiOptions, RetryPolicy};
pub use session_id::{InvalidSessionId, SessionId};
pub use tokens::{MESSAGE_OVERHEAD, REPLY_PRIMING, TokenCounter};
pub use tools::mcp::{McpServerOptions, McpServerState, McpServerStatus, McpToolStatus, McpTools};
pub use tools::{
    Calculator, CurrentTime, HttpTool, HttpToolMethod, HttpToolOptions, Tool, ToolFilter,
    ToolOutcome, ToolRegistry, ToolSet, ToolSource, read_at_most,
};
