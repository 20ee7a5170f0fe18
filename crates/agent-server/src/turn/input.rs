//! What a turn is asked: its agent, the conversation it continues, the new message and how its
//! calls that need the client are handled.

use std::sync::Arc;

use agent_core::{ContextStrategy, Message, Resume, Sampling, SessionId, ToolSpec};

use crate::agents::ServedAgent;
use crate::dto::ValidTurn;

/// What a turn runs on, and its new user message.
#[derive(Debug)]
pub(crate) struct TurnInput {
    /// The agent that answers: the one the request named, else the default one (for a session
    /// that belongs to an agent, its own: see [`Agents::for_session`]).
    pub(crate) agent: Arc<ServedAgent>,
    /// Whether the request named it.
    pub(crate) agent_named: bool,
    pub(crate) conversation: Conversation,
    pub(crate) message: String,
    /// The client's sampling choices (the OpenAI-compatible API's), already within bounds.
    pub(crate) sampling: Sampling,
    /// System messages for this turn only, after the server's system prompt and before the
    /// history (the Responses API's `instructions`); never stored.
    pub(crate) instructions: Vec<Message>,
    /// Messages of the conversation the client sent before its new one that the stored session
    /// does not hold yet (the Responses API's `input` as a whole conversation): they follow the
    /// stored history, and are stored with the turn, before its user message. Empty for a
    /// given conversation, whose history holds them.
    pub(crate) earlier: Vec<Message>,
    /// What the turn's calls needing the client do (see [`WaitMode`]).
    pub(crate) wait_mode: WaitMode,
    /// A waiting run continued with the client's answers (its `message` is then unused).
    pub(crate) resume: Option<Resume>,
    /// The client's own tools, offered beside the agent's: a call to one goes back to the
    /// client.
    pub(crate) client_tools: Vec<ToolSpec>,
    /// The client's choice of context policy for this turn, over the agent's.
    pub(crate) context: ContextChoice,
}

/// What a request chose of the context policy for its turn (the Responses API's `truncation`
/// and `context_management`); unset parts are the agent's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ContextChoice {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) strategy: Option<ContextStrategy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) max_input_tokens: Option<u64>,
}

/// The conversation a turn continues.
#[derive(Debug)]
pub(crate) enum Conversation {
    /// A stored session: locked, its history window read, the turn stored into it.
    Session {
        session: SessionId,
        /// The request named no session, so `session` was made here: nobody else can know it.
        new_session: bool,
        /// The session must still be where the client last saw it (its `next_sequence`), or the
        /// turn is refused (409 `response_not_latest`): `previous_response_id` continues from
        /// the latest response only.
        continues_from: Option<u64>,
    },
    /// A conversation the client sent whole (the OpenAI-compatible API without a session): used
    /// as given, nothing stored but the turn's usage, counted for `caller`.
    Given {
        caller: String,
        history: Vec<Message>,
    },
}

impl TurnInput {
    /// `/agent`'s turn, answered by `agent`.
    pub(crate) fn of_agent(turn: ValidTurn, agent: Arc<ServedAgent>, agent_named: bool) -> Self {
        Self {
            agent,
            agent_named,
            conversation: Conversation::Session {
                session: turn.session,
                new_session: turn.new_session,
                continues_from: None,
            },
            message: turn.message,
            sampling: Sampling {
                response_format: turn.response_format,
                ..Sampling::default()
            },
            instructions: Vec::new(),
            earlier: Vec::new(),
            wait_mode: WaitMode::Suspend,
            resume: None,
            client_tools: Vec::new(),
            context: ContextChoice::default(),
        }
    }
}

/// What a turn's calls that need the client (an approval, a client's tool) do, by what its API
/// can say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WaitMode {
    /// The API has no shape for an approval (Chat Completions): a call needing one is rejected
    /// at once; calls to the client's tools are the answer, and the run completes.
    #[default]
    Reject,
    /// Both are the answer (the Responses API's output items); the run completes, the turn is
    /// stored with the calls, and a later request answers them.
    Answer,
    /// The run stops and waits for the answers (`/agent`, `POST /runs/{id}/actions`).
    Suspend,
}
