//! Tool calls in the Responses API's items: the calls a response ends with (`function_call` for
//! the client's tools, `mcp_approval_request` for the agent's tools that need approval) and their
//! answers in a later request's `input` (`function_call_output`, `mcp_approval_response`), after
//! `previous_response_id` or with the whole conversation. A conversation ending with answers
//! goes on from them: results become tool messages, approved calls run, rejected ones read
//! `rejected by the user: <reason>`. Chat Completions on a session answer a stored turn's calls
//! the same way ([`session_answers`]).

use std::collections::HashSet;

use agent_core::{Answer, Message, Role, ToolCall, Wait, WaitingCall};

use super::request::bad;
use crate::error::ApiError;

/// The id of the approval request of call `call` (what `mcp_approval_response` names).
pub(crate) fn approval_request_id(call: &str) -> String {
    format!("mcpr_{call}")
}

/// The call an approval request id names.
pub(crate) fn call_of_approval_request(id: &str) -> &str {
    id.strip_prefix("mcpr_").unwrap_or(id)
}

/// The id of the `function_call` item of call `call`.
pub(crate) fn function_call_item_id(call: &str) -> String {
    format!("fc_{call}")
}

/// One input item, as the conversation takes it.
#[derive(Debug)]
pub(crate) enum Entry {
    Message(Message),
    /// A call the assistant made (`function_call`, `mcp_approval_request`); consecutive calls are
    /// one assistant message.
    Call(ToolCall),
    /// A client's tool result (`function_call_output`).
    Output {
        call: String,
        output: String,
    },
    /// An approval or rejection (`mcp_approval_response`), at input index `index`.
    Approval {
        call: String,
        approve: bool,
        reason: Option<String>,
        index: usize,
    },
}

/// The conversation of a request's input: its messages (calls and results in place), the new
/// user message (none when the input ends with answers), and the approvals it ends with (the
/// calls to run or reject when the agent goes on).
#[derive(Debug, Default)]
pub(crate) struct Planned {
    pub(crate) messages: Vec<Message>,
    pub(crate) message: Option<String>,
    pub(crate) approvals: Vec<(WaitingCall, Answer)>,
}

/// Plans `entries` (the input, in order) after `dangling`: the calls the previous response's
/// conversation ended with, unanswered. Every call must be answered (400 naming it otherwise,
/// as OpenAI answers); an approval answers a call of the input or of `dangling`.
pub(crate) fn plan(entries: Vec<Entry>, dangling: &[ToolCall]) -> Result<Planned, ApiError> {
    let trailing = entries
        .iter()
        .rposition(|entry| !matches!(entry, Entry::Output { .. } | Entry::Approval { .. }))
        .map_or(0, |last| last + 1);
    let answers_at_end = trailing < entries.len();
    let ends_with_other = matches!(
        entries.last(),
        Some(Entry::Message(message)) if message.role != Role::User
    );
    let mut planned = Planned::default();
    let mut known: Vec<ToolCall> = dangling.to_vec();
    let mut answered: HashSet<String> = HashSet::new();
    let last = entries.len().saturating_sub(1);
    for (position, entry) in entries.into_iter().enumerate() {
        match entry {
            Entry::Message(message) => {
                let is_new = position == last && message.role == Role::User;
                if is_new {
                    planned.message = Some(message.content);
                } else {
                    planned.messages.push(message);
                }
            }
            Entry::Call(call) => {
                match planned.messages.last_mut() {
                    Some(previous)
                        if previous.role == Role::Assistant
                            && !previous.tool_calls.is_empty()
                            && previous.content.is_empty() =>
                    {
                        previous.tool_calls.push(call.clone());
                    }
                    _ => planned
                        .messages
                        .push(Message::assistant_tool_calls("", vec![call.clone()])),
                }
                known.push(call);
            }
            Entry::Output { call, output } => {
                answered.insert(call.clone());
                planned.messages.push(Message::tool_result(call, output));
            }
            Entry::Approval {
                call,
                approve,
                reason,
                index,
            } => {
                let param = format!("input[{index}].approval_request_id");
                let Some(found) = known.iter().find(|known| known.id == call).cloned() else {
                    return Err(bad(
                        &param,
                        format!(
                            "no approval request {} is waiting in this conversation",
                            approval_request_id(&call)
                        ),
                    ));
                };
                if !answered.insert(call.clone()) {
                    return Err(bad(&param, format!("call {call} is answered twice")));
                }
                let answer = if approve {
                    Answer::Approved
                } else {
                    Answer::Rejected { reason }
                };
                if position >= trailing {
                    let waiting = WaitingCall {
                        call: found,
                        wait: Wait::Approval,
                    };
                    planned.approvals.push((waiting, answer));
                } else {
                    // Answered by an earlier request: what became of it stands in for its result.
                    let content = match answer {
                        Answer::Rejected { reason } => agent_core::rejection(reason.as_deref()),
                        _ => "approved (its result was not sent back)".to_owned(),
                    };
                    planned.messages.push(Message::tool_result(call, content));
                }
            }
        }
    }
    let results: HashSet<&str> = planned
        .messages
        .iter()
        .filter_map(|message| message.tool_call_id.as_deref())
        .collect();
    let approved: HashSet<&str> = planned
        .approvals
        .iter()
        .map(|(waiting, _)| waiting.call.id.as_str())
        .collect();
    if let Some(open) = known
        .iter()
        .find(|call| !results.contains(call.id.as_str()) && !approved.contains(call.id.as_str()))
    {
        return Err(bad(
            "input",
            format!("No tool output found for function call {}.", open.id),
        ));
    }
    if ends_with_other {
        return Err(bad(
            &format!("input[{last}].role"),
            "the last message must be the user's (the one the agent answers)",
        ));
    }
    if planned.message.is_none() && !answers_at_end {
        return Err(bad(
            "input",
            "the last item must be the user's message (the one the agent answers), or the answers \
             (function_call_output, mcp_approval_response) to the calls before it",
        ));
    }
    Ok(planned)
}

/// The calls the conversation `messages` (oldest first) ends with that no later message answers.
pub(crate) fn dangling(messages: &[Message]) -> Vec<ToolCall> {
    let Some(at) = messages
        .iter()
        .rposition(|message| message.role == Role::Assistant)
    else {
        return Vec::new();
    };
    let answered: HashSet<&str> = messages[at + 1..]
        .iter()
        .filter_map(|message| message.tool_call_id.as_deref())
        .collect();
    messages[at]
        .tool_calls
        .iter()
        .filter(|call| !answered.contains(call.id.as_str()))
        .cloned()
        .collect()
}

/// The stored messages read to find the calls a session's last turn ended with.
pub(crate) const LAST_STORED: usize = 256;

/// The tool results `answers` (the request's last messages, from `messages[first]`) checked
/// against `dangling`, the calls the session's last turn ended with: each call answered, each
/// result answering one (400 naming the first that is not, as OpenAI answers).
pub(crate) fn session_answers(
    dangling: &[ToolCall],
    answers: Vec<Message>,
    first: usize,
) -> Result<Vec<Message>, ApiError> {
    let answered = |call: &ToolCall| {
        answers
            .iter()
            .any(|answer| answer.tool_call_id.as_deref() == Some(call.id.as_str()))
    };
    if let Some(open) = dangling.iter().find(|call| !answered(call)) {
        return Err(bad(
            "messages",
            format!("No tool output found for function call {}.", open.id),
        ));
    }
    if let Some(index) = answers.iter().position(|answer| {
        !dangling
            .iter()
            .any(|call| answer.tool_call_id.as_deref() == Some(call.id.as_str()))
    }) {
        let param = format!("messages[{}].tool_call_id", first + index);
        return Err(bad(
            &param,
            "the session's last turn made no such call: a tool message answers a call of it",
        ));
    }
    Ok(answers)
}
