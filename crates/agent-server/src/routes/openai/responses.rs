//! `POST /v1/responses` and `GET /v1/responses/{id}`: OpenAI's Responses API (the one its Agents
//! SDK uses) over the agent's turns. A stored response (`store`, the default) is a turn of a
//! session: the first starts a session the server names, `previous_response_id` continues it
//! (from its latest response), and the response object is kept by the turn's own statement,
//! readable by its caller until the session is deleted. `store: false` runs the turn on the
//! given conversation (after the previous response's, if named) and keeps nothing but usage.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::web::{Bytes, Data, Path};
use actix_web::{HttpRequest, HttpResponse};
use agent_config::Settings;
use agent_core::{Message, Role, Sampling, SessionId, ToolCall};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::watch;
use utoipa::ToSchema;

use super::chat::{
    ChatRole, as_bad_request, bad, choice_is_free, first_refusal, within, within_max_tokens,
};
use super::{OpenAiError, OpenAiErrorBody, check_model, unix_now};
use crate::access::caller_name;
use crate::backends::Backends;
use crate::dto::format::TextFormat;
use crate::dto::{deserialize_text_or_list, message_problem, parse_json};
use crate::error::{ApiError, ErrorCode};
use crate::failure_log::FailureLog;
use crate::idempotency;
use crate::routes::turn_stream::{self, EventFormat, StepText, sse};
use crate::turn::{Conversation, Extras, Finished, KeepResponse, TurnInput, Turns, render_as};

/// A response request, as far as the agent takes it. Fields this table does not list are ignored.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct ResponseRequest {
    /// The agent's model id (`GET /v1/models`).
    model: String,
    /// The user's message, or a conversation ending with it: messages of any role, after the
    /// previous response's conversation when `previous_response_id` names one. With `store`
    /// (the default) its user and assistant messages are stored with the turn, so a later
    /// `previous_response_id` continues from all of it; system and developer messages apply to
    /// this response only.
    input: ResponseInput,
    /// A system message for this response only (not carried over by `previous_response_id`).
    #[serde(default)]
    #[schema(nullable)]
    instructions: Option<String>,
    /// Continue the conversation of this response of yours (its latest).
    #[serde(default)]
    #[schema(nullable)]
    previous_response_id: Option<String>,
    /// Keep the turn and the response (default true); false keeps nothing but the usage.
    #[serde(default)]
    #[schema(nullable)]
    store: Option<bool>,
    /// Answer as `response.*` server-sent events.
    #[serde(default)]
    #[schema(nullable)]
    stream: Option<bool>,
    #[serde(default)]
    #[schema(nullable, minimum = 0, maximum = 2)]
    temperature: Option<f32>,
    #[serde(default)]
    #[schema(nullable, minimum = 0, maximum = 1)]
    top_p: Option<f32>,
    /// Most tokens each model call of the turn may produce (at most `AGENT_MODEL__MAX_TOKENS`).
    #[serde(default)]
    #[schema(nullable, minimum = 1)]
    max_output_tokens: Option<u32>,
    /// Echoed in the response; not used.
    #[serde(default)]
    #[schema(nullable)]
    metadata: Option<HashMap<String, String>>,
    /// Echoed in the response; not used.
    #[serde(default)]
    #[schema(nullable)]
    user: Option<String>,
    /// Not used (the agent calls its own tools as configured).
    #[serde(default)]
    #[schema(nullable)]
    #[expect(
        dead_code,
        reason = "accepted from OpenAI clients and type-checked, not used"
    )]
    parallel_tool_calls: Option<bool>,
    /// Refused: the agent runs its own tools on the server.
    #[serde(default)]
    #[schema(nullable, value_type = Option<Vec<Object>>, max_items = 0)]
    tools: Option<Vec<Value>>,
    /// Only `auto` or `none`.
    #[serde(default)]
    #[schema(nullable, value_type = Option<String>, pattern = "^(auto|none)$")]
    tool_choice: Option<Value>,
    /// The form of the final answer: `{"format": {"type": "text" | "json_object" |
    /// "json_schema", ...}}`. Sent to the model with every call of the turn; the agent's tool
    /// calls stay free-form. A model server that cannot do it: 400 `response_format_unsupported`.
    #[serde(default)]
    #[schema(nullable)]
    text: Option<TextConfig>,
    /// `disabled` or `auto` (the server's history window applies either way).
    #[serde(default)]
    #[schema(nullable)]
    #[expect(dead_code, reason = "its values are checked by deserializing it")]
    truncation: Option<Truncation>,
    /// Only false: responses are answered while the request waits.
    #[serde(default)]
    #[schema(nullable)]
    background: Option<bool>,
    /// Refused when not empty: no extra output is available.
    #[serde(default)]
    #[schema(nullable, max_items = 0)]
    include: Option<Vec<String>>,
}

/// `input`: text, or messages.
#[derive(Debug, ToSchema)]
#[serde(untagged)]
pub(crate) enum ResponseInput {
    Text(String),
    Items(Vec<InputItem>),
}

deserialize_text_or_list!(ResponseInput, Items, "text or a list of input items");

/// An item of `input`: a message, or a reference to the output message of a stored response of
/// yours (what the Vercel AI SDK sends for earlier answers).
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct InputItem {
    /// `message` (may be left out) or `item_reference`.
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
    /// An `item_reference`'s target: the `msg_…` id of a stored response's output message
    /// (a message's own id is ignored).
    #[serde(default)]
    #[schema(nullable)]
    id: Option<String>,
}

/// The input item types: a message, or a reference to a stored output message.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ItemType {
    Message,
    ItemReference,
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

/// `text`: the answer's format (other fields, such as `verbosity`, are ignored).
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct TextConfig {
    #[serde(default)]
    #[schema(nullable)]
    format: Option<TextFormat>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Truncation {
    Disabled,
    Auto,
}

/// What a response says of its request.
#[derive(Debug, Clone)]
struct Echo {
    id: String,
    created_at: u64,
    model: String,
    instructions: Option<String>,
    previous_response_id: Option<String>,
    store: bool,
    temperature: Option<f32>,
    top_p: Option<f32>,
    max_output_tokens: Option<u32>,
    user: Option<String>,
    metadata: HashMap<String, String>,
    /// The request's `text.format` (`{"type": "text"}` when it had none).
    format: Value,
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
    /// The agent's final message (empty while in progress).
    output: Vec<OutputMessage>,
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
    metadata: HashMap<String, String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
struct ResponseErrorInfo {
    code: String,
    message: String,
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

    /// The response object: in progress (no output yet), completed with `finished`, or failed.
    fn object(
        &self,
        status: &'static str,
        finished: Option<&Finished>,
        error: Option<ResponseErrorInfo>,
    ) -> ResponseObject {
        ResponseObject {
            id: self.id.clone(),
            object: "response",
            created_at: self.created_at,
            status,
            error,
            incomplete_details: None,
            instructions: self.instructions.clone(),
            max_output_tokens: self.max_output_tokens,
            model: self.model.clone(),
            output: finished
                .map(|finished| vec![self.message("completed", finished.text.clone())])
                .unwrap_or_default(),
            parallel_tool_calls: true,
            previous_response_id: self.previous_response_id.clone(),
            reasoning: json!({ "effort": null, "summary": null }),
            store: self.store,
            temperature: self.temperature,
            text: json!({ "format": self.format }),
            tool_choice: "auto",
            tools: Vec::new(),
            top_p: self.top_p,
            truncation: "disabled",
            usage: finished.map(|finished| ResponseUsage {
                input_tokens: finished.usage.prompt_tokens,
                input_tokens_details: json!({ "cached_tokens": 0 }),
                output_tokens: finished.usage.completion_tokens,
                output_tokens_details: json!({ "reasoning_tokens": 0 }),
                total_tokens: finished.usage.total(),
            }),
            user: self.user.clone(),
            metadata: self.metadata.clone(),
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

/// A checked request: the turn, what the response echoes, and whether to stream.
struct ValidResponse {
    input: TurnInput,
    echo: Echo,
    stream: bool,
}

impl ResponseRequest {
    fn refuse_unsupported(&self) -> Result<(), ApiError> {
        first_refusal([
            (
                self.tools.as_ref().is_some_and(|tools| !tools.is_empty()),
                "tools",
                "client-side tools are not supported: the agent runs its own tools on the server",
            ),
            (
                !choice_is_free(self.tool_choice.as_ref()),
                "tool_choice",
                "only `auto` or `none`: the client offers no tools",
            ),
            (
                self.background == Some(true),
                "background",
                "background responses are not supported: the request waits for its answer",
            ),
            (
                self.include
                    .as_ref()
                    .is_some_and(|include| !include.is_empty()),
                "include",
                "no extra output is available",
            ),
        ])
    }

    /// The turn, with the previous response's session (already looked up, the caller's) when
    /// one was named.
    async fn validate(
        self,
        settings: &Settings,
        caller: &str,
        backends: &Backends,
    ) -> Result<ValidResponse, ApiError> {
        check_model(&self.model, settings)?;
        self.refuse_unsupported()?;
        let text_format = self.text.as_ref().and_then(|text| text.format.clone());
        let sampling = Sampling {
            temperature: within("temperature", self.temperature, 0.0, 2.0)?,
            top_p: within("top_p", self.top_p, 0.0, 1.0)?,
            max_tokens: within_max_tokens("max_output_tokens", self.max_output_tokens, settings)?,
            response_format: text_format
                .as_ref()
                .map(|format| format.checked("text.format"))
                .transpose()
                .map_err(as_bad_request)?
                .unwrap_or_default(),
            ..Sampling::default()
        };
        let store = self.store.unwrap_or(true);
        let mut items: Vec<(ChatRole, String)> = Vec::new();
        match &self.input {
            ResponseInput::Text(text) => items.push((ChatRole::User, text.clone())),
            ResponseInput::Items(list) => {
                for (index, item) in list.iter().enumerate() {
                    items.push(input_item(index, item, backends, caller).await?);
                }
            }
        }
        // The last message is the user's, which the agent answers.
        let (last_role, message) = items
            .last()
            .cloned()
            .ok_or_else(|| bad("input", "input must hold at least the user's message"))?;
        let last = items.len() - 1;
        let param = |index: usize| match self.input {
            ResponseInput::Text(_) => "input".to_owned(),
            ResponseInput::Items(_) => format!("input[{index}].content"),
        };
        if last_role != ChatRole::User {
            return Err(bad(
                &format!("input[{last}].role"),
                "the last message must be the user's (the one the agent answers)",
            ));
        }
        for (index, (role, text)) in items.iter().enumerate() {
            let limit = if index == last {
                settings.api.max_message_chars
            } else {
                usize::MAX
            };
            if let Some(problem) = message_problem(text, limit) {
                return Err(bad(&param(index), format!("{} {problem}", param(index))));
            }
            let system = matches!(role, ChatRole::System | ChatRole::Developer);
            if system && !settings.openai_api.follow_system_messages {
                return Err(bad(
                    &format!("input[{index}].role"),
                    "system and developer messages are refused by this server \
                     (AGENT_OPENAI_API__SYSTEM_MESSAGES=refuse); its own system prompt applies",
                ));
            }
        }
        let previous = match &self.previous_response_id {
            None => None,
            Some(id) => Some(stored_response(backends, id, caller, "previous_response_id").await?),
        };
        let mut instructions: Vec<Message> =
            self.instructions.iter().map(Message::system).collect();
        let earlier = &items[..last];
        let as_message = |role: &ChatRole, text: &String| match role {
            ChatRole::User => Message::user(text),
            ChatRole::Assistant => Message::assistant(text),
            ChatRole::System | ChatRole::Developer => Message::system(text),
        };
        let (conversation, earlier) = if store {
            // The earlier messages join the conversation (after the previous response's, if
            // named) and are stored with the turn, so a later previous_response_id continues
            // from all of it; system and developer messages apply to this turn only.
            let (system, conversation): (Vec<_>, Vec<_>) = earlier
                .iter()
                .partition(|(role, _)| matches!(role, ChatRole::System | ChatRole::Developer));
            instructions.extend(system.iter().map(|(_, text)| Message::system(text)));
            let earlier: Vec<Message> = conversation
                .iter()
                .map(|(role, text)| as_message(role, text))
                .collect();
            let session = match &previous {
                Some(previous) => Conversation::Session {
                    session: previous.session.clone(),
                    new_session: false,
                    continues_from: Some(previous.sequence),
                },
                None => Conversation::Session {
                    session: SessionId::parse(&uuid::Uuid::new_v4().to_string())
                        .map_err(|error| ApiError::Internal(anyhow::Error::new(error)))?
                        .owned_by(caller),
                    new_session: true,
                    continues_from: None,
                },
            };
            (session, earlier)
        } else {
            let mut history = match &previous {
                Some(previous) => previous_history(backends, previous, settings).await?,
                None => Vec::new(),
            };
            history.extend(earlier.iter().map(|(role, text)| as_message(role, text)));
            let given = Conversation::Given {
                caller: caller.to_owned(),
                history,
            };
            (given, Vec::new())
        };
        let echo = Echo {
            id: format!("resp_{}", uuid::Uuid::new_v4().simple()),
            created_at: unix_now(),
            model: self.model,
            instructions: self.instructions,
            previous_response_id: self.previous_response_id,
            store,
            temperature: self.temperature,
            top_p: self.top_p,
            max_output_tokens: self.max_output_tokens,
            user: self.user,
            metadata: self.metadata.unwrap_or_default(),
            format: text_format.map_or_else(
                || json!({ "type": "text" }),
                |format| serde_json::to_value(format).unwrap_or_default(),
            ),
        };
        Ok(ValidResponse {
            input: TurnInput {
                conversation,
                message,
                sampling,
                instructions,
                earlier,
            },
            echo,
            stream: self.stream.unwrap_or(false),
        })
    }
}

/// The role and text of `input[index]`: a message's, or the output message an
/// `item_reference` names (one of the caller's stored responses; 404 otherwise).
async fn input_item(
    index: usize,
    item: &InputItem,
    backends: &Backends,
    caller: &str,
) -> Result<(ChatRole, String), ApiError> {
    if matches!(item.kind, Some(ItemType::ItemReference)) {
        let param = format!("input[{index}].id");
        let id = item
            .id
            .as_deref()
            .ok_or_else(|| bad(&param, format!("{param}: an item_reference needs an id")))?;
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
        let body: Value = serde_json::from_str(&stored.body)
            .map_err(|error| ApiError::Internal(anyhow::Error::new(error)))?;
        let text = body["output"][0]["content"][0]["text"]
            .as_str()
            .unwrap_or_default();
        return Ok((ChatRole::Assistant, text.to_owned()));
    }
    let role = item.role.ok_or_else(|| {
        let param = format!("input[{index}].role");
        bad(&param, format!("{param}: a message needs a role"))
    })?;
    let param = format!("input[{index}].content");
    let text = match &item.content {
        None => return Err(bad(&param, format!("{param}: a message needs content"))),
        Some(ItemContent::Text(text)) => text.clone(),
        Some(ItemContent::Parts(parts)) if parts.is_empty() => {
            return Err(bad(&param, format!("{param} must hold at least one part")));
        }
        Some(ItemContent::Parts(parts)) => parts
            .iter()
            .map(|part| part.text.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
    };
    Ok((role, text))
}

/// The caller's stored response `id`, or 404 `response_not_found` (another caller's too)
/// naming `param`, the request parameter that held the id.
async fn stored_response(
    backends: &Backends,
    id: &str,
    caller: &str,
    param: &str,
) -> Result<agent_storage::StoredResponse, ApiError> {
    let found = backends.conversations.response(id).await?;
    found
        .filter(|response| response.session.owner() == caller)
        .ok_or_else(|| {
            ApiError::invalid_param(
                StatusCode::NOT_FOUND,
                ErrorCode::ResponseNotFound,
                param,
                format!("no stored response of yours has the id {id}"),
            )
        })
}

/// The conversation up to `previous` (its session's history window), for a turn that stores
/// nothing.
async fn previous_history(
    backends: &Backends,
    previous: &agent_storage::StoredResponse,
    settings: &Settings,
) -> Result<Vec<Message>, ApiError> {
    let stored = backends
        .conversations
        .recent_messages(&previous.session, agent_storage::MAX_HISTORY_WINDOW)
        .await?;
    let mut history: Vec<Message> = stored
        .into_iter()
        .filter(|message| message.sequence < previous.sequence)
        .map(|message| message.message)
        .collect();
    let keep = history.len().min(settings.turn.history_window);
    history.drain(..history.len() - keep);
    // A window may start inside an earlier turn; tool results without their call are invalid.
    let first_kept = history
        .iter()
        .position(|message| message.role != Role::Tool)
        .unwrap_or(history.len());
    history.drain(..first_kept);
    Ok(history)
}

/// Create a response: a turn of the agent in OpenAI's Responses API.
#[utoipa::path(
    post,
    path = "/v1/responses",
    tag = "openai",
    request_body = ResponseRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Run at most once; a retry with the same key and body gets the stored response (not with `stream`)")),
    responses(
        (status = 200, description = "`application/json`: the response object; with `stream: true`, `text/event-stream` of `response.*` events (`event: <type>`, `data: <JSON with that type>`): `response.created`, `response.in_progress`, `response.output_item.added`, `response.content_part.added`, `response.output_text.delta`…, `response.output_text.done`, `response.content_part.done`, `response.output_item.done`, `response.completed`; or `response.failed` and `error` (nothing stored) if the turn fails after the stream began.",
            content(
                (ResponseObject = "application/json"),
                (ResponseObject = "text/event-stream"),
            )),
        (status = 400, description = "Malformed JSON, an invalid or unsupported parameter (`param` names it), or a conversation longer than the model's context window (`context_length_exceeded`)", body = OpenAiErrorBody),
        (status = 404, description = "No such model (`model_not_found`), or no stored response of yours with `previous_response_id` (`response_not_found`)", body = OpenAiErrorBody),
        (status = 409, description = "The conversation went on after `previous_response_id` (`response_not_latest`), or it is busy (`session_busy`, `session_conflict`, `idempotency_key_in_progress`)", body = OpenAiErrorBody),
        (status = 413, description = "Body too large (`payload_too_large`)", body = OpenAiErrorBody),
        (status = 415, description = "Not sent as JSON (`unsupported_media_type`)", body = OpenAiErrorBody),
        (status = 422, description = "A turn limit reached, or a reused Idempotency-Key", body = OpenAiErrorBody),
        (status = 500, description = "A failure of the server's own (`internal_error`)", body = OpenAiErrorBody),
        (status = 502, description = "The model server failed", body = OpenAiErrorBody),
        (status = 503, description = "Storage unavailable, or the model server's rate limit; see Retry-After", body = OpenAiErrorBody),
        (status = 504, description = "The model or the turn timed out", body = OpenAiErrorBody),
    )
)]
#[allow(clippy::too_many_arguments)]
pub(crate) async fn post_responses(
    request: HttpRequest,
    body: Bytes,
    turns: Data<Turns>,
    backends: Data<Backends>,
    settings: Data<Settings>,
    drain: Data<watch::Receiver<bool>>,
    failures: Data<FailureLog>,
) -> Result<HttpResponse, ApiError> {
    let parsed: ResponseRequest = parse_json(&request, &body).map_err(as_bad_request)?;
    let idempotency_key = idempotency::key_of(&request)?;
    let caller = caller_name(&request);
    let valid = parsed.validate(&settings, &caller, &backends).await?;
    if valid.stream && idempotency_key.is_some() {
        return Err(bad(
            "Idempotency-Key",
            "Idempotency-Key is not supported with stream: true (a stream cannot be replayed)",
        ));
    }
    let ValidResponse {
        input,
        echo,
        stream,
    } = valid;
    let slot = turns.admit()?;
    let kept = echo.clone();
    let keep = echo.store.then(|| KeepResponse {
        id: echo.id.clone(),
        render: render_as(move |finished: &Finished| {
            kept.object("completed", Some(finished), None)
        }),
    });
    if stream {
        let prepared = turns.prepare(input, slot).await?;
        return Ok(turn_stream::respond(
            turns.into_inner(),
            prepared,
            Extras {
                claim: None,
                response: keep,
            },
            drain.get_ref().clone(),
            settings.api.sse_keepalive,
            failures.into_inner(),
            ResponseEvents::new(echo),
        ));
    }
    let Some(key) = idempotency_key else {
        let extras = Extras {
            claim: None,
            response: keep,
        };
        let (finished, _) = turns.run(input, slot, extras).await?;
        return Ok(HttpResponse::Ok().json(echo.object("completed", Some(&finished), None)));
    };
    let fingerprint = idempotency::fingerprint(&[&String::from_utf8_lossy(&body)]);
    let answered = echo.clone();
    let (object, replayed) = idempotency::run_turn_once(
        &backends,
        &turns,
        &settings,
        idempotency::scoped(&request, "responses:", &key),
        &fingerprint,
        input,
        slot,
        keep,
        // Replayed as stored: a JSON value of the response object.
        move |finished: &Finished| {
            serde_json::to_value(answered.object("completed", Some(finished), None))
                .unwrap_or_default()
        },
    )
    .await?;
    let mut response = HttpResponse::Ok();
    if replayed {
        response.insert_header(("Idempotent-Replayed", "true"));
    }
    Ok(response.json(object))
}

/// A stored response of yours, as it was answered.
#[utoipa::path(
    get,
    path = "/v1/responses/{response_id}",
    tag = "openai",
    params(("response_id" = String, Path, description = "A response's id (`resp_…`)")),
    responses(
        (status = 200, body = ResponseObject),
        (status = 404, description = "No stored response of yours has this id (`response_not_found`)", body = OpenAiErrorBody),
        (status = 500, description = "A failure of the server's own (`internal_error`)", body = OpenAiErrorBody),
        (status = 503, description = "Storage unavailable (`storage_unavailable`)", body = OpenAiErrorBody),
    )
)]
pub(crate) async fn get_response(
    request: HttpRequest,
    id: Path<String>,
    backends: Data<Backends>,
) -> Result<HttpResponse, ApiError> {
    let caller = caller_name(&request);
    let stored = stored_response(&backends, &id, &caller, "response_id").await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(stored.body))
}

/// The `response.*` events of a streamed response.
struct ResponseEvents {
    echo: Echo,
    sequence: u64,
    /// The output item and its text part were announced.
    opened: bool,
    text: StepText,
}

impl ResponseEvents {
    fn new(echo: Echo) -> Self {
        Self {
            echo,
            sequence: 0,
            opened: false,
            text: StepText::default(),
        }
    }

    /// An event of `kind` with `fields` and the next sequence number.
    fn event(&mut self, kind: &str, mut fields: Value) -> Bytes {
        fields["type"] = json!(kind);
        fields["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        sse(Some(kind), &fields)
    }

    /// The output item and its text part, announced once before their first text.
    fn open(&mut self) -> Vec<Bytes> {
        if std::mem::replace(&mut self.opened, true) {
            return Vec::new();
        }
        let item = serde_json::to_value(self.echo.message("in_progress", String::new()))
            .unwrap_or_default();
        let item_id = self.echo.message_id();
        vec![
            self.event(
                "response.output_item.added",
                json!({ "output_index": 0, "item": item }),
            ),
            self.event(
                "response.content_part.added",
                json!({ "item_id": item_id, "output_index": 0, "content_index": 0,
                        "part": { "type": "output_text", "text": "", "annotations": [] } }),
            ),
        ]
    }

    fn failed(&mut self, code: String, message: String) -> Bytes {
        let info = ResponseErrorInfo {
            code: code.clone(),
            message: message.clone(),
        };
        let response =
            serde_json::to_value(self.echo.object("failed", None, Some(info))).unwrap_or_default();
        let mut bytes = self
            .event("response.failed", json!({ "response": response }))
            .to_vec();
        bytes.extend_from_slice(&self.event(
            "error",
            json!({ "code": code, "message": message, "param": null }),
        ));
        Bytes::from(bytes)
    }
}

impl EventFormat for ResponseEvents {
    fn start(&mut self) -> Option<Bytes> {
        let response =
            serde_json::to_value(self.echo.object("in_progress", None, None)).unwrap_or_default();
        let mut bytes = self
            .event("response.created", json!({ "response": response }))
            .to_vec();
        bytes.extend_from_slice(
            &self.event("response.in_progress", json!({ "response": response })),
        );
        Some(Bytes::from(bytes))
    }

    fn delta(&mut self, text: String) -> Option<Bytes> {
        let delta = self.text.delta(text)?;
        let mut bytes: Vec<u8> = self.open().concat();
        let item_id = self.echo.message_id();
        bytes.extend_from_slice(&self.event(
            "response.output_text.delta",
            json!({ "item_id": item_id, "output_index": 0, "content_index": 0, "delta": delta, "logprobs": [] }),
        ));
        Some(Bytes::from(bytes))
    }

    fn tool_call(&mut self, _call: ToolCall) -> Option<Bytes> {
        self.text.tool_call();
        None
    }

    fn tool_result(&mut self, _: String, _: String, _: String, _: bool) -> Option<Bytes> {
        None
    }

    fn done(&mut self, finished: &Finished) -> Vec<Bytes> {
        let mut events = self.open();
        let item_id = self.echo.message_id();
        let part = json!({ "type": "output_text", "text": finished.text, "annotations": [] });
        let item = serde_json::to_value(self.echo.message("completed", finished.text.clone()))
            .unwrap_or_default();
        let response = serde_json::to_value(self.echo.object("completed", Some(finished), None))
            .unwrap_or_default();
        events.push(self.event(
            "response.output_text.done",
            json!({ "item_id": item_id, "output_index": 0, "content_index": 0, "text": finished.text, "logprobs": [] }),
        ));
        events.push(self.event(
            "response.content_part.done",
            json!({ "item_id": item_id, "output_index": 0, "content_index": 0, "part": part }),
        ));
        events.push(self.event(
            "response.output_item.done",
            json!({ "output_index": 0, "item": item }),
        ));
        events.push(self.event("response.completed", json!({ "response": response })));
        events
    }

    fn error(&mut self, error: &ApiError) -> Bytes {
        let error = OpenAiError::from_api(error);
        self.failed(error.code.unwrap_or_default(), error.message)
    }

    fn shutdown(&mut self) -> Bytes {
        self.failed(
            "server_shutting_down".into(),
            "the server is shutting down; this turn was cancelled and nothing was stored".into(),
        )
    }
}
