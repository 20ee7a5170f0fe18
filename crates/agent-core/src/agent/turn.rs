//! What a turn starts from ([`TurnRequest`]) and ends with ([`TurnResult`]), what it waits for
//! ([`Waits`]) and how a stopped turn is resumed ([`Resume`]), and what a streaming turn reports
//! ([`AgentEvent`]).

use std::sync::Arc;

use crate::compaction::Compaction;
use crate::context::ContextStrategy;
use crate::conversation::{Message, TokenUsage, ToolCall, Turn};
use crate::error::AgentError;
use crate::model::{Sampling, ToolSpec};

/// What a turn starts from.
#[derive(Debug, Clone)]
pub struct TurnRequest {
    /// Earlier messages of the session, oldest first.
    pub history: Vec<Message>,
    /// The turn's user message (unused when the turn resumes: its messages so far hold it).
    pub user_message: String,
    /// Tokens the session used before this turn.
    pub session_tokens_used: u64,
    /// The client's sampling choices for every model call of the turn.
    pub sampling: Sampling,
    /// What waits for the client before a step's tool calls run (see [`Waits`]).
    pub waits: Waits,
    /// A turn that stopped before tool calls, continued with the client's answers.
    pub resume: Option<Resume>,
    /// How the history is fitted to the model's context.
    pub context: TurnContext,
}

/// What a turn knows of its history's size, and the client's choice of strategy.
#[derive(Debug, Clone, Default)]
pub struct TurnContext {
    /// The stored token counts of the history's messages, in its order (missing or `None`:
    /// counted when needed).
    pub history_tokens: Vec<Option<u64>>,
    /// Leading history messages never left out (the request's own instructions).
    pub pinned: usize,
    /// The strategy of this turn instead of the agent's (the Responses API's `truncation`).
    pub strategy: Option<ContextStrategy>,
    /// The budget of this turn instead of the agent's (the Responses API's
    /// `compact_threshold`).
    pub max_input_tokens: Option<u64>,
    /// The session's summary of its earlier turns, sent after the pinned messages in their place.
    pub summary: Option<String>,
    /// History messages (after the pinned ones) a compaction may cover: the stored ones (0: a
    /// conversation the client sends whole is never compacted).
    pub compactable: usize,
}

/// Which tool calls wait for the client: every call to one of the client's own tools (offered to
/// the model beside the agent's; the client runs it and sends its result), and the calls to the
/// agent's tools its approval policy names (the client approves or rejects each). A step's other
/// calls run at once; the turn then stops, its waiting calls in [`TurnResult::waiting`].
#[derive(Debug, Clone, Default)]
pub struct Waits {
    pub client_tools: Vec<ToolSpec>,
    pub approval: Option<Arc<dyn ApprovalPolicy>>,
    /// Set where the client cannot be asked (an API with no shape for an approval): a call
    /// needing approval is not waited for but rejected at once, with this reason.
    pub unapprovable: Option<String>,
}

/// Which calls to the agent's own tools need the client's approval before they run.
pub trait ApprovalPolicy: Send + Sync + std::fmt::Debug {
    fn needs_approval(&self, call: &ToolCall) -> bool;
}

/// Why a tool call waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// A call to one of the agent's tools, run once the client approves it.
    Approval,
    /// A call to one of the client's tools: the client runs it.
    ClientTool,
}

/// A tool call the turn stopped before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingCall {
    pub call: ToolCall,
    pub wait: Wait,
}

/// The client's answer to a waiting call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Run it (an approval).
    Approved,
    /// Do not run it: the model reads `rejected by the user` and the reason.
    Rejected { reason: Option<String> },
    /// The result of a client's tool.
    Output(String),
}

/// A stopped turn, as it stopped, and the client's answer to each call it waited for.
#[derive(Debug, Clone)]
pub struct Resume {
    /// The turn's messages so far ([`TurnResult::turn`] of the stopped turn).
    pub produced: Vec<Message>,
    /// Each waiting call (in the order the turn reported them) with its answer.
    pub answers: Vec<(WaitingCall, Answer)>,
    /// The stopped turn's usage and model calls, which the resumed turn goes on counting.
    pub usage: TokenUsage,
    pub steps: usize,
}

/// A turn that ended: finished (no waiting calls), or stopped before the calls in `waiting`
/// (resume it with [`Resume`]): the messages to store and the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnResult {
    /// The user message, then every assistant and tool message, with the summed usage.
    pub turn: Turn,
    /// The final assistant text (for a stopped turn, the text beside its calls, often empty).
    pub response: String,
    /// Model calls made.
    pub steps: usize,
    /// The calls the turn stopped before, in call order; empty when it finished.
    pub waiting: Vec<WaitingCall>,
    /// The model chain's entry that answered the turn's last model call (see
    /// [`crate::ModelChain`]); none for a model that is no chain.
    pub model: Option<String>,
    /// History messages left out of the turn's requests to fit the context.
    pub left_out: usize,
    /// The compaction the turn made, or why it failed (the turn then truncated instead).
    pub compaction: Option<Result<Compaction, String>>,
}

/// The tool message of a rejected call.
pub fn rejection(reason: Option<&str>) -> String {
    match reason.map(str::trim).filter(|reason| !reason.is_empty()) {
        Some(reason) => format!("rejected by the user: {reason}"),
        None => "rejected by the user".to_owned(),
    }
}

/// What a streaming turn reports, in order; `Done` or `Failed` comes last.
#[derive(Debug)]
pub enum AgentEvent {
    TextDelta(String),
    ToolCallStarted(ToolCall),
    ToolResult {
        call_id: String,
        name: String,
        content: String,
        is_error: bool,
    },
    Done(TurnResult),
    Failed(AgentError),
}

impl Waits {
    /// Whether `call` waits for the client, and why.
    pub(super) fn wait_for(&self, call: &ToolCall) -> Option<Wait> {
        if self.client_tools.iter().any(|tool| tool.name == call.name) {
            return Some(Wait::ClientTool);
        }
        self.approval
            .as_ref()
            .filter(|policy| policy.needs_approval(call))
            .map(|_| Wait::Approval)
    }
}
