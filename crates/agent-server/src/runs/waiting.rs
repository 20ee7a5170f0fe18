//! Runs that wait for the client: what a stopped run keeps in the store to be continued by any
//! replica ([`Pending`]: its turn's input, where it stores, what it produced, and each call it
//! waits for with the answer it got so far), and how a waiting call is shown to the client
//! (`required_action`).

use agent_core::{
    Answer, Message, Resume, Sampling, TokenUsage, ToolCall, ToolSpec, Wait, WaitingCall,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::queue::QueuedResponse;

/// A waiting run's state, as the store keeps it (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Pending {
    /// The turn's input, as its request gave it.
    pub(crate) turn: PendingTurn,
    /// The session's `next_sequence` the turn stores from (the session cannot move meanwhile:
    /// the run holds it).
    pub(crate) next_sequence: u64,
    /// The turn's messages so far (its user message first).
    pub(crate) produced: Vec<Message>,
    pub(crate) usage: TokenUsage,
    pub(crate) steps: usize,
    /// The calls it waits for, in call order, with their answers so far.
    pub(crate) calls: Vec<PendingCall>,
}

/// The input of a turn that may wait, kept to continue it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct PendingTurn {
    /// The agent that answers (none: kept before agents were named, the default one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) agent: Option<String>,
    pub(crate) message: String,
    #[serde(default)]
    pub(crate) sampling: Sampling,
    #[serde(default)]
    pub(crate) instructions: Vec<Message>,
    #[serde(default)]
    pub(crate) earlier: Vec<Message>,
    /// The response object its turn keeps (the Responses API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) response: Option<QueuedResponse>,
    /// The client's own tools the request offered (offered again when the run goes on).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) client_tools: Vec<ClientTool>,
}

/// A client's tool as a waiting run keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ClientTool {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) description: String,
    pub(crate) parameters: serde_json::Value,
}

impl From<&ToolSpec> for ClientTool {
    fn from(spec: &ToolSpec) -> Self {
        Self {
            name: spec.name.clone(),
            description: spec.description.clone(),
            parameters: spec.parameters.clone(),
        }
    }
}

impl From<ClientTool> for ToolSpec {
    fn from(tool: ClientTool) -> Self {
        Self {
            name: tool.name,
            description: tool.description,
            parameters: tool.parameters,
        }
    }
}

/// A call a run waits for, and its answer once given.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PendingCall {
    pub(crate) call: ToolCall,
    pub(crate) wait: WaitKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) answer: Option<PendingAnswer>,
    /// An approval's source: the MCP server's name, or `agent` (the Responses API's
    /// `server_label`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) label: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WaitKind {
    Approval,
    ClientTool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum PendingAnswer {
    Approved,
    Rejected { reason: Option<String> },
    Output { output: String },
}

impl From<&WaitingCall> for PendingCall {
    fn from(waiting: &WaitingCall) -> Self {
        Self {
            call: waiting.call.clone(),
            wait: match waiting.wait {
                Wait::Approval => WaitKind::Approval,
                Wait::ClientTool => WaitKind::ClientTool,
            },
            answer: None,
            label: None,
        }
    }
}

impl Pending {
    /// The calls still unanswered.
    pub(crate) fn open_calls(&self) -> impl Iterator<Item = &PendingCall> {
        self.calls.iter().filter(|call| call.answer.is_none())
    }

    /// Every call is answered: the run can go on.
    pub(crate) fn is_answered(&self) -> bool {
        self.open_calls().next().is_none()
    }

    /// What the agent resumes from (every call answered).
    pub(crate) fn resume(&self) -> Resume {
        let answers = self
            .calls
            .iter()
            .map(|pending| {
                let wait = match pending.wait {
                    WaitKind::Approval => Wait::Approval,
                    WaitKind::ClientTool => Wait::ClientTool,
                };
                let answer = match &pending.answer {
                    Some(PendingAnswer::Approved) => Answer::Approved,
                    Some(PendingAnswer::Output { output }) => Answer::Output(output.clone()),
                    Some(PendingAnswer::Rejected { reason }) => Answer::Rejected {
                        reason: reason.clone(),
                    },
                    // Not reached: a run resumes once every call is answered.
                    None => Answer::Rejected { reason: None },
                };
                let call = pending.call.clone();
                (WaitingCall { call, wait }, answer)
            })
            .collect();
        Resume {
            produced: self.produced.clone(),
            answers,
            usage: self.usage,
            steps: self.steps,
        }
    }

    /// What the client is asked for now (see [`required_action`]).
    pub(crate) fn required_action(&self) -> Option<RequiredAction> {
        let open: Vec<PendingCall> = self.open_calls().cloned().collect();
        required_action(&open)
    }
}

/// What the client is asked for, of `calls`: the approvals first, then the client tools' calls
/// (a step that made both asks for the approvals first).
pub(crate) fn required_action(calls: &[PendingCall]) -> Option<RequiredAction> {
    let of = |kind: WaitKind| -> Vec<RequiredCall> {
        calls
            .iter()
            .filter(|pending| pending.wait == kind)
            .map(|pending| RequiredCall::from(&pending.call))
            .collect()
    };
    let approvals = of(WaitKind::Approval);
    if !approvals.is_empty() {
        return Some(RequiredAction {
            kind: ActionKind::ApproveToolCalls,
            tool_calls: approvals,
        });
    }
    let outputs = of(WaitKind::ClientTool);
    (!outputs.is_empty()).then_some(RequiredAction {
        kind: ActionKind::SubmitToolOutputs,
        tool_calls: outputs,
    })
}

impl From<&ToolCall> for RequiredCall {
    fn from(call: &ToolCall) -> Self {
        Self {
            id: call.id.clone(),
            name: call.name.clone(),
            arguments: call.arguments.clone(),
        }
    }
}

/// What a waiting run asks of its client: approve or reject its calls to the agent's tools
/// (`approve_tool_calls`), or run its calls to the client's own tools and send their outputs
/// (`submit_tool_outputs`). Answer with `POST /runs/{id}/actions`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub(crate) struct RequiredAction {
    #[serde(rename = "type")]
    pub(crate) kind: ActionKind,
    pub(crate) tool_calls: Vec<RequiredCall>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ActionKind {
    ApproveToolCalls,
    SubmitToolOutputs,
}

/// A tool call the run waits for: its id (what an answer names), the tool, and the arguments
/// as the model wrote them (JSON text).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub(crate) struct RequiredCall {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) arguments: String,
}

/// The required action of a waiting run's stored state, if it reads.
pub(crate) fn required_action_of(pending: &str) -> Option<RequiredAction> {
    serde_json::from_str::<Pending>(pending)
        .ok()?
        .required_action()
}

/// The unanswered calls of a waiting run's stored state, if it reads.
pub(crate) fn open_calls_of(pending: &str) -> Vec<PendingCall> {
    serde_json::from_str::<Pending>(pending)
        .map(|pending| pending.open_calls().cloned().collect())
        .unwrap_or_default()
}
