//! The `input` of a response request: text, or items — messages, references to stored output
//! messages, tool calls of earlier responses and their answers — read into the conversation's
//! entries (see [`super::response_calls`]).

use agent_core::{Message, ToolCall};
use serde::Deserialize;
use utoipa::ToSchema;

use super::request::{ChatRole, Content, bad};
use super::response_calls::{self, Entry};
use super::responses::stored_response;
use crate::backends::Backends;
use crate::dto::deserialize_text_or_list;
use crate::error::ApiError;
use crate::routes::pipeline::Incoming;

/// `input`: text, or messages.
#[derive(Debug, ToSchema)]
#[serde(untagged)]
pub(crate) enum ResponseInput {
    Text(String),
    Items(Vec<InputItem>),
}

deserialize_text_or_list!(ResponseInput, Items, "text or a list of input items");

/// An item of `input`: a message, a reference to the output message of a stored response of
/// yours (what the Vercel AI SDK sends for earlier answers), a tool call of an earlier response
/// (`function_call`, `mcp_approval_request`: sent back as they came), or an answer to one
/// (`function_call_output`, `mcp_approval_response`).
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct InputItem {
    /// `message` (may be left out), `item_reference`, `function_call`, `function_call_output`,
    /// `mcp_approval_request` or `mcp_approval_response`.
    #[serde(rename = "type", default)]
    #[schema(nullable)]
    kind: Option<ItemType>,
    /// A message's role (required for a message).
    #[serde(default)]
    #[schema(nullable)]
    role: Option<ChatRole>,
    /// A message's content (required for a message).
    #[serde(default)]
    #[schema(nullable)]
    content: Option<ItemContent>,
    /// An `item_reference`'s target: the `msg_…` id of a stored response's output message;
    /// an `mcp_approval_request`'s id (a message's own id is ignored).
    #[serde(default)]
    #[schema(nullable)]
    id: Option<String>,
    /// A `function_call`'s or `function_call_output`'s call.
    #[serde(default)]
    #[schema(nullable)]
    call_id: Option<String>,
    /// A `function_call`'s or `mcp_approval_request`'s tool.
    #[serde(default)]
    #[schema(nullable)]
    name: Option<String>,
    /// A `function_call`'s or `mcp_approval_request`'s arguments (JSON text).
    #[serde(default)]
    #[schema(nullable)]
    arguments: Option<String>,
    /// A `function_call_output`'s result: what the model reads.
    #[serde(default)]
    #[schema(nullable)]
    output: Option<String>,
    /// An `mcp_approval_response`'s request (`mcpr_…`).
    #[serde(default)]
    #[schema(nullable)]
    approval_request_id: Option<String>,
    /// An `mcp_approval_response`'s answer: run the call, or not.
    #[serde(default)]
    #[schema(nullable)]
    approve: Option<bool>,
    /// An `mcp_approval_response`'s reason (what the model reads of a rejection).
    #[serde(default)]
    #[schema(nullable)]
    reason: Option<String>,
}

/// The input item types: a message, or a reference to a stored output message.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ItemType {
    Message,
    ItemReference,
    FunctionCall,
    FunctionCallOutput,
    McpApprovalRequest,
    McpApprovalResponse,
}

/// A message's content: text, or text parts (joined with newlines).
#[derive(Debug, ToSchema)]
#[serde(untagged)]
pub(crate) enum ItemContent {
    Text(String),
    Parts(Vec<ItemPart>),
}

deserialize_text_or_list!(ItemContent, Parts, "text or a list of text parts");

/// A text part: `input_text`, or `output_text` in an assistant message.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct ItemPart {
    #[serde(rename = "type")]
    #[expect(dead_code, reason = "its values are checked by deserializing it")]
    kind: PartType,
    text: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PartType {
    InputText,
    OutputText,
}

/// `input[index]` as the conversation takes it: a message (its text at most `max_chars`
/// characters), the output message an `item_reference` names (one of the caller's stored
/// responses; 404 otherwise), a tool call, or an answer to one.
pub(super) async fn input_entry(
    index: usize,
    item: &InputItem,
    max_chars: usize,
    incoming: &Incoming<'_>,
) -> Result<Entry, ApiError> {
    let (backends, caller) = (&incoming.routes.backends, incoming.caller.as_str());
    let field = |name: &str, value: Option<&String>| {
        let param = format!("input[{index}].{name}");
        value
            .cloned()
            .ok_or_else(|| bad(&param, format!("{param}: this item needs it")))
    };
    match item.kind {
        Some(ItemType::ItemReference) => {
            let param = format!("input[{index}].id");
            let id = field("id", item.id.as_ref())?;
            let response_id = id
                .strip_prefix("msg_")
                .map(|hex| format!("resp_{hex}"))
                .ok_or_else(|| {
                    bad(
                        &param,
                        format!("{param}: only the output messages (msg_…) of stored responses can be referenced"),
                    )
                })?;
            let stored = stored_response(backends, &response_id, caller, &param).await?;
            return Ok(Entry::Message(Message::assistant(stored.output_text)));
        }
        Some(ItemType::FunctionCall) => {
            return Ok(Entry::Call(ToolCall {
                id: field("call_id", item.call_id.as_ref())?,
                name: field("name", item.name.as_ref())?,
                arguments: field("arguments", item.arguments.as_ref())?,
            }));
        }
        Some(ItemType::McpApprovalRequest) => {
            let id = field("id", item.id.as_ref())?;
            return Ok(Entry::Call(ToolCall {
                id: response_calls::call_of_approval_request(&id).to_owned(),
                name: field("name", item.name.as_ref())?,
                arguments: field("arguments", item.arguments.as_ref())?,
            }));
        }
        Some(ItemType::FunctionCallOutput) => {
            return Ok(Entry::Output {
                call: field("call_id", item.call_id.as_ref())?,
                output: field("output", item.output.as_ref())?,
            });
        }
        Some(ItemType::McpApprovalResponse) => {
            let request = field("approval_request_id", item.approval_request_id.as_ref())?;
            let param = format!("input[{index}].approve");
            return Ok(Entry::Approval {
                call: response_calls::call_of_approval_request(&request).to_owned(),
                approve: item
                    .approve
                    .ok_or_else(|| bad(&param, format!("{param}: this item needs it")))?,
                reason: item.reason.clone(),
                index,
            });
        }
        None | Some(ItemType::Message) => {}
    }
    let role_param = format!("input[{index}].role");
    let role = item
        .role
        .ok_or_else(|| bad(&role_param, format!("{role_param}: a message needs a role")))?
        .check(&role_param, incoming.settings())?;
    let param = format!("input[{index}].content");
    let content = match &item.content {
        None => return Err(bad(&param, format!("{param}: a message needs content"))),
        Some(ItemContent::Text(text)) => Content::Text(text),
        Some(ItemContent::Parts(parts)) => {
            Content::Parts(parts.iter().map(|part| part.text.as_str()).collect())
        }
    };
    Ok(Entry::Message(
        role.message(content.text(&param, max_chars)?),
    ))
}

/// The last messages of `previous`'s conversation (enough for the calls it ended with).
pub(super) async fn last_messages(
    backends: &Backends,
    previous: &agent_storage::StoredResponse,
) -> Result<Vec<Message>, ApiError> {
    const LAST: usize = 256;
    let stored = backends
        .conversations
        .recent_messages(&previous.session, LAST)
        .await?;
    Ok(stored
        .into_iter()
        .filter(|message| message.sequence < previous.sequence)
        .map(|message| message.message)
        .collect())
}
