//! The response object of the Responses API and its `response.*` events: what a response says
//! of its request ([`Echo`], also rebuilt from a stored response), rendered whole or as a stream.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix_web::web::Bytes;
use agent_storage::{ResponseParameters, StoredResponse};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::OpenAiError;
use super::response_calls::{approval_request_id, function_call_item_id};
use crate::error::ApiError;
use crate::routes::turn_stream::{EventFormat, SHUTDOWN_MESSAGE, sse};
use crate::runs::waiting::{PendingCall, WaitKind};
use crate::turn::{Finished, KeepResponse};

/// What a response says of its request: its id, when, whether it is kept, and the parameters it
/// was asked with (stored with it when kept, and read back to show it again).
#[derive(Debug, Clone)]
pub(super) struct Echo {
    pub(super) id: String,
    pub(super) created_at: u64,
    pub(super) store: bool,
    pub(super) parameters: Arc<ResponseParameters>,
    /// The request's `truncation`: `disabled`, or `auto` (also for an unset one, and for a
    /// stored response read back, whose request's choice is not kept).
    pub(super) truncation: &'static str,
}

/// OpenAI's response object.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ResponseObject {
    /// `resp_` and 32 hex digits.
    id: String,
    /// Always `response`.
    object: &'static str,
    created_at: u64,
    /// `completed`; in a stream first `in_progress`, or `failed`.
    status: &'static str,
    error: Option<ResponseErrorInfo>,
    #[schema(value_type = Option<Object>)]
    incomplete_details: Option<Value>,
    instructions: Option<String>,
    max_output_tokens: Option<u32>,
    model: String,
    /// The agent's final message (empty while in progress), then the calls it ended with for the
    /// client: `function_call` (the client's tools: answer with `function_call_output`) and
    /// `mcp_approval_request` (the agent's tools that need approval: answer with
    /// `mcp_approval_response`).
    output: Vec<OutputItem>,
    parallel_tool_calls: bool,
    previous_response_id: Option<String>,
    #[schema(value_type = Object)]
    reasoning: Value,
    store: bool,
    temperature: Option<f32>,
    #[schema(value_type = Object)]
    text: Value,
    tool_choice: &'static str,
    #[schema(value_type = Vec<Object>)]
    tools: Vec<Value>,
    top_p: Option<f32>,
    truncation: &'static str,
    /// The whole turn's tokens (all its model calls); null until it completes.
    usage: Option<ResponseUsage>,
    user: Option<String>,
    metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
struct ResponseErrorInfo {
    code: String,
    message: String,
}

/// An item of `output`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
enum OutputItem {
    Message(OutputMessage),
    FunctionCall(FunctionCallItem),
    ApprovalRequest(ApprovalRequestItem),
}

/// A call to one of the client's tools: run it, and send its result as a `function_call_output`
/// input item with its `call_id`.
#[derive(Debug, Clone, Serialize, ToSchema)]
struct FunctionCallItem {
    /// Always `function_call`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// `fc_` and the call id.
    id: String,
    call_id: String,
    name: String,
    /// JSON text.
    arguments: String,
    /// Always `completed`.
    status: &'static str,
}

/// A call to one of the agent's tools that needs the client's approval: answer it with an
/// `mcp_approval_response` input item (`approval_request_id` = this `id`, `approve`, `reason`).
#[derive(Debug, Clone, Serialize, ToSchema)]
struct ApprovalRequestItem {
    /// Always `mcp_approval_request`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// `mcpr_` and the call id.
    id: String,
    /// The MCP server the tool is from, or `agent` for built-in and HTTP tools.
    server_label: String,
    name: String,
    /// JSON text.
    arguments: String,
}

impl OutputItem {
    /// The output item of a call the turn ended with.
    fn of_call(pending: &PendingCall) -> Self {
        let call = &pending.call;
        match pending.wait {
            WaitKind::ClientTool => Self::FunctionCall(FunctionCallItem {
                kind: "function_call",
                id: function_call_item_id(&call.id),
                call_id: call.id.clone(),
                name: call.name.clone(),
                arguments: call.arguments.clone(),
                status: "completed",
            }),
            WaitKind::Approval => Self::ApprovalRequest(ApprovalRequestItem {
                kind: "mcp_approval_request",
                id: approval_request_id(&call.id),
                server_label: pending
                    .label
                    .clone()
                    .unwrap_or_else(|| crate::approvals::AGENT_LABEL.to_owned()),
                name: call.name.clone(),
                arguments: call.arguments.clone(),
            }),
        }
    }
}

/// Whether a finished turn's output has its message: it said something, or called nothing.
fn shows_message(finished: &Finished) -> bool {
    !finished.text.is_empty() || finished.waiting.is_empty()
}

/// An assistant message of `output`.
#[derive(Debug, Serialize, ToSchema)]
struct OutputMessage {
    /// Always `message`.
    #[serde(rename = "type")]
    kind: &'static str,
    id: String,
    status: &'static str,
    role: &'static str,
    content: Vec<OutputText>,
}

#[derive(Debug, Serialize, ToSchema)]
struct OutputText {
    /// Always `output_text`.
    #[serde(rename = "type")]
    kind: &'static str,
    text: String,
    #[schema(value_type = Vec<Object>)]
    annotations: Vec<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
struct ResponseUsage {
    input_tokens: u64,
    #[schema(value_type = Object)]
    input_tokens_details: Value,
    output_tokens: u64,
    #[schema(value_type = Object)]
    output_tokens_details: Value,
    total_tokens: u64,
}

impl Echo {
    fn message_id(&self) -> String {
        format!("msg_{}", &self.id["resp_".len()..])
    }

    /// A stored response as it was answered, and its turn's answer.
    pub(super) fn stored(stored: StoredResponse) -> (Self, Finished) {
        let created = stored
            .created_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let finished = Finished {
            id: uuid::Uuid::nil(),
            created,
            text: stored.output_text,
            session: None,
            usage: stored.usage,
            agent: None,
            model: None,
            run_id: String::new(),
            waiting: Vec::new(),
            context: None,
        };
        let echo = Self {
            id: stored.id,
            created_at: created,
            store: true,
            parameters: Arc::new(stored.parameters),
            truncation: "auto",
        };
        (echo, finished)
    }

    /// The echo of a background response, from what its queued run keeps (it is stored).
    pub(super) fn of_kept(keep: KeepResponse) -> Self {
        Self {
            id: keep.id,
            created_at: keep.created_at,
            store: true,
            parameters: keep.parameters,
            truncation: "auto",
        }
    }

    /// The response while it has no answer: `queued`, `in_progress`, `cancelled`, or `failed`
    /// with its error (code and message).
    pub(super) fn unanswered(
        &self,
        status: &'static str,
        error: Option<(String, String)>,
    ) -> ResponseObject {
        let error = error.map(|(code, message)| ResponseErrorInfo { code, message });
        self.object(status, None, error)
    }

    pub(super) fn kept(&self) -> KeepResponse {
        KeepResponse {
            id: self.id.clone(),
            created_at: self.created_at,
            parameters: Arc::clone(&self.parameters),
        }
    }

    /// The response object of the stored turn `finished`.
    pub(super) fn completed(&self, finished: &Finished) -> ResponseObject {
        self.object("completed", Some(finished), None)
    }

    /// The response object: in progress (no output yet), completed with `finished`, or failed.
    fn object(
        &self,
        status: &'static str,
        finished: Option<&Finished>,
        error: Option<ResponseErrorInfo>,
    ) -> ResponseObject {
        let parameters = &*self.parameters;
        ResponseObject {
            id: self.id.clone(),
            object: "response",
            created_at: self.created_at,
            status,
            error,
            incomplete_details: None,
            instructions: parameters.instructions.clone(),
            max_output_tokens: parameters.max_output_tokens,
            model: parameters.model.clone(),
            output: finished
                .map(|finished| {
                    let message = shows_message(finished).then(|| {
                        OutputItem::Message(self.message("completed", finished.text.clone()))
                    });
                    message
                        .into_iter()
                        .chain(finished.waiting.iter().map(OutputItem::of_call))
                        .collect()
                })
                .unwrap_or_default(),
            parallel_tool_calls: true,
            previous_response_id: parameters.previous_response_id.clone(),
            reasoning: json!({ "effort": null, "summary": null }),
            store: self.store,
            temperature: parameters.temperature,
            text: json!({
                "format": parameters.text_format.clone().unwrap_or_else(|| json!({ "type": "text" }))
            }),
            tool_choice: "auto",
            tools: Vec::new(),
            top_p: parameters.top_p,
            truncation: self.truncation,
            usage: finished.map(|finished| ResponseUsage {
                input_tokens: finished.usage.prompt_tokens,
                input_tokens_details: json!({ "cached_tokens": 0 }),
                output_tokens: finished.usage.completion_tokens,
                output_tokens_details: json!({ "reasoning_tokens": 0 }),
                total_tokens: finished.usage.total(),
            }),
            user: parameters.user.clone(),
            metadata: parameters.metadata.clone(),
        }
    }

    fn message(&self, status: &'static str, text: String) -> OutputMessage {
        OutputMessage {
            kind: "message",
            id: self.message_id(),
            status,
            role: "assistant",
            content: if status == "completed" {
                vec![OutputText {
                    kind: "output_text",
                    text,
                    annotations: Vec::new(),
                }]
            } else {
                Vec::new()
            },
        }
    }
}

/// The `response.*` events of a streamed response.
pub(crate) struct ResponseEvents {
    echo: Echo,
    sequence: u64,
    /// The output item and its text part were announced.
    opened: bool,
    /// A resumed stream: the events numbered up to this one were sent before.
    starting_after: Option<u64>,
}

/// An event's JSON: its type, its place in the stream, and its fields.
#[derive(Serialize)]
struct Sequenced<'a, T> {
    #[serde(rename = "type")]
    kind: &'a str,
    sequence_number: u64,
    #[serde(flatten)]
    fields: T,
}

/// The fields of the events about the whole response.
#[derive(Serialize)]
struct OfResponse {
    response: ResponseObject,
}

/// The fields of the events about an output item.
#[derive(Serialize)]
struct OfItem {
    output_index: u32,
    item: OutputItem,
}

/// The fields of the events about the message's text part.
#[derive(Serialize)]
struct OfPart<'a> {
    item_id: &'a str,
    output_index: u32,
    content_index: u32,
    #[serde(flatten)]
    fields: Value,
}

impl ResponseEvents {
    pub(super) fn new(echo: Echo) -> Self {
        Self {
            echo,
            sequence: 0,
            opened: false,
            starting_after: None,
        }
    }

    /// The events of a response from its start, those after `starting_after` written: the
    /// same run's events make the same events with the same numbers, so a stream resumes
    /// where it stopped.
    pub(super) fn resuming(echo: Echo, starting_after: Option<u64>) -> Self {
        Self {
            starting_after,
            ..Self::new(echo)
        }
    }

    /// An event of `kind` with `fields` and the next sequence number.
    fn event(&mut self, kind: &str, fields: impl Serialize) -> Bytes {
        let sequence_number = self.sequence;
        self.sequence += 1;
        if self
            .starting_after
            .is_some_and(|after| sequence_number <= after)
        {
            return Bytes::new();
        }
        let event = Sequenced {
            kind,
            sequence_number,
            fields,
        };
        sse(Some(kind), &event)
    }

    /// An event about the text part of the output message, with `fields`.
    fn part_event(&mut self, kind: &str, fields: Value) -> Bytes {
        let item_id = self.echo.message_id();
        let part = OfPart {
            item_id: &item_id,
            output_index: 0,
            content_index: 0,
            fields,
        };
        self.event(kind, part)
    }

    /// The output item and its text part, announced once before their first text.
    fn open(&mut self) -> Vec<Bytes> {
        if std::mem::replace(&mut self.opened, true) {
            return Vec::new();
        }
        let item = self.echo.message("in_progress", String::new());
        vec![
            self.event(
                "response.output_item.added",
                OfItem {
                    output_index: 0,
                    item: OutputItem::Message(item),
                },
            ),
            self.part_event(
                "response.content_part.added",
                json!({ "part": { "type": "output_text", "text": "", "annotations": [] } }),
            ),
        ]
    }

    fn failed(&mut self, code: String, message: String) -> Bytes {
        let info = ResponseErrorInfo {
            code: code.clone(),
            message: message.clone(),
        };
        let response = self.echo.object("failed", None, Some(info));
        let mut bytes = self
            .event("response.failed", OfResponse { response })
            .to_vec();
        bytes.extend_from_slice(&self.event(
            "error",
            json!({ "code": code, "message": message, "param": null }),
        ));
        Bytes::from(bytes)
    }
}

impl EventFormat for ResponseEvents {
    const SHOWS_TOOLS: bool = false;

    fn start(&mut self, _run: &crate::dto::RunEvent) -> Option<Bytes> {
        let mut bytes = Vec::new();
        for kind in ["response.created", "response.in_progress"] {
            let response = self.echo.object("in_progress", None, None);
            bytes.extend_from_slice(&self.event(kind, OfResponse { response }));
        }
        Some(Bytes::from(bytes))
    }

    fn delta(&mut self, delta: String) -> Option<Bytes> {
        let mut bytes: Vec<u8> = self.open().concat();
        bytes.extend_from_slice(&self.part_event(
            "response.output_text.delta",
            json!({ "delta": delta, "logprobs": [] }),
        ));
        Some(Bytes::from(bytes))
    }

    fn done(&mut self, finished: &Finished) -> Vec<Bytes> {
        let mut events = Vec::new();
        let mut index = 0;
        if self.opened || shows_message(finished) {
            events = self.open();
            let text = &finished.text;
            events.push(self.part_event(
                "response.output_text.done",
                json!({ "text": text, "logprobs": [] }),
            ));
            events.push(self.part_event(
                "response.content_part.done",
                json!({ "part": { "type": "output_text", "text": text, "annotations": [] } }),
            ));
            let item = self.echo.message("completed", text.clone());
            events.push(self.event(
                "response.output_item.done",
                OfItem {
                    output_index: 0,
                    item: OutputItem::Message(item),
                },
            ));
            index = 1;
        }
        for pending in &finished.waiting {
            for kind in ["response.output_item.added", "response.output_item.done"] {
                let item = OutputItem::of_call(pending);
                events.push(self.event(
                    kind,
                    OfItem {
                        output_index: index,
                        item,
                    },
                ));
            }
            index += 1;
        }
        let response = self.echo.object("completed", Some(finished), None);
        events.push(self.event("response.completed", OfResponse { response }));
        events
    }

    fn error(&mut self, error: &ApiError) -> Bytes {
        let error = OpenAiError::from_api(error);
        self.failed(error.code.unwrap_or_default(), error.message)
    }

    fn shutdown(&mut self) -> Bytes {
        self.failed("server_shutting_down".into(), SHUTDOWN_MESSAGE.into())
    }
}
