//! `POST /v1/responses` and `GET /v1/responses/{id}`: OpenAI's Responses API (the one its Agents
//! SDK uses) over the agent's turns. A stored response (`store`, the default) is a turn of a
//! session: the first starts a session the server names, `previous_response_id` continues it
//! (from its latest response), and the response object is kept by the turn's own statement,
//! readable by its caller until the session is deleted. `store: false` runs the turn on the
//! given conversation (after the previous response's, if named) and keeps nothing but usage.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::web::{Bytes, Data, Path};
use actix_web::{HttpRequest, HttpResponse};
use agent_config::Settings;
use agent_core::{Message, Sampling, SessionId};
use agent_storage::{ResponseParameters, StoredResponse};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::request::{
    ChatRole, Content, TurnRefusals, as_bad_request, bad, first_refusal, turn_request,
};
use super::{OpenAiError, OpenAiErrorBody, check_model, unix_now};
use crate::access::caller_name;
use crate::backends::Backends;
use crate::dto::deserialize_text_or_list;
use crate::dto::format::TextFormat;
use crate::error::{ApiError, ErrorCode};
use crate::history_cache::first_kept;
use crate::idempotency;
use crate::routes::pipeline::{self, Incoming, TurnRoutes, TurnWire, Valid};
use crate::routes::turn_stream::{EventFormat, SHUTDOWN_MESSAGE, sse};
use crate::turn::{Conversation, Finished, KeepResponse, TurnInput};

turn_request! {
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
    /// Most tokens each model call of the turn may produce (at most `AGENT_MODEL__MAX_TOKENS`).
    #[serde(default)]
    #[schema(nullable, minimum = 1)]
    max_output_tokens: Option<u32>,
    /// Echoed in the response; not used.
    #[serde(default)]
    #[schema(nullable)]
    metadata: Option<BTreeMap<String, String>>,
    /// Echoed in the response; not used.
    #[serde(default)]
    #[schema(nullable)]
    user: Option<String>,
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

/// What a response says of its request: its id, when, whether it is kept, and the parameters it
/// was asked with (stored with it when kept, and read back to show it again).
#[derive(Debug, Clone)]
struct Echo {
    id: String,
    created_at: u64,
    store: bool,
    parameters: Arc<ResponseParameters>,
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
    metadata: BTreeMap<String, String>,
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

    /// A stored response as it was answered, and its turn's answer.
    fn stored(stored: StoredResponse) -> (Self, Finished) {
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
        };
        let echo = Self {
            id: stored.id,
            created_at: created,
            store: true,
            parameters: Arc::new(stored.parameters),
        };
        (echo, finished)
    }

    /// What the turn's store keeps of it.
    fn kept(&self) -> KeepResponse {
        KeepResponse {
            id: self.id.clone(),
            created_at: self.created_at,
            parameters: Arc::clone(&self.parameters),
        }
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
                .map(|finished| vec![self.message("completed", finished.text.clone())])
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
            truncation: "disabled",
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

impl ResponseRequest {
    fn refuse_unsupported(&self) -> Result<(), ApiError> {
        self.shared().refuse_client_tools()?;
        first_refusal([
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
    async fn checked(self, incoming: &Incoming<'_>) -> Result<Valid<Self>, ApiError> {
        let settings = incoming.settings();
        let caller = incoming.caller.as_str();
        let backends = &incoming.routes.backends;
        check_model(&self.model, settings)?;
        self.refuse_unsupported()?;
        let text_format = self.text.as_ref().and_then(|text| text.format.clone());
        let shared = self
            .shared()
            .sampling(("max_output_tokens", self.max_output_tokens), settings)?;
        let sampling = Sampling {
            response_format: text_format
                .as_ref()
                .map(|format| format.checked("text.format"))
                .transpose()
                .map_err(as_bad_request)?
                .unwrap_or_default(),
            ..shared
        };
        let store = self.store.unwrap_or(true);
        let mut items: Vec<(ChatRole, String)> = Vec::new();
        match &self.input {
            ResponseInput::Text(text) => {
                let text = Content::Text(text).text("input", settings.api.max_message_chars)?;
                items.push((ChatRole::User, text));
            }
            ResponseInput::Items(list) => {
                let last = list.len().saturating_sub(1);
                for (index, item) in list.iter().enumerate() {
                    let limit = if index == last {
                        settings.api.max_message_chars
                    } else {
                        usize::MAX
                    };
                    let item = input_item(index, item, limit, incoming).await?;
                    items.push(item);
                }
            }
        }
        // The last message is the user's, which the agent answers.
        let (last_role, message) = items
            .pop()
            .ok_or_else(|| bad("input", "input must hold at least the user's message"))?;
        if last_role != ChatRole::User {
            return Err(bad(
                &format!("input[{}].role", items.len()),
                "the last message must be the user's (the one the agent answers)",
            ));
        }
        let previous = match &self.previous_response_id {
            None => None,
            Some(id) => Some(stored_response(backends, id, caller, "previous_response_id").await?),
        };
        let mut instructions: Vec<Message> =
            self.instructions.iter().map(Message::system).collect();
        let earlier = items;
        let (conversation, earlier) = if store {
            // The earlier messages join the conversation (after the previous response's, if
            // named) and are stored with the turn, so a later previous_response_id continues
            // from all of it; system and developer messages apply to this turn only.
            let (system, conversation): (Vec<_>, Vec<_>) =
                earlier.into_iter().partition(|(role, _)| role.is_system());
            instructions.extend(system.into_iter().map(|(_, text)| Message::system(text)));
            let earlier: Vec<Message> = conversation
                .into_iter()
                .map(|(role, text)| role.message(text))
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
            history.extend(earlier.into_iter().map(|(role, text)| role.message(text)));
            let given = Conversation::Given {
                caller: caller.to_owned(),
                history,
            };
            (given, Vec::new())
        };
        let parameters = ResponseParameters {
            model: self.model,
            instructions: self.instructions,
            previous_response_id: self.previous_response_id,
            temperature: self.temperature,
            top_p: self.top_p,
            max_output_tokens: self.max_output_tokens,
            user: self.user,
            metadata: self.metadata.unwrap_or_default(),
            text_format: text_format
                .map(serde_json::to_value)
                .transpose()
                .map_err(|error| ApiError::Internal(error.into()))?,
        };
        let echo = Echo {
            id: format!("resp_{}", uuid::Uuid::new_v4().simple()),
            created_at: unix_now(),
            store,
            parameters: Arc::new(parameters),
        };
        let keep = echo.store.then(|| echo.kept());
        let answered = echo.clone();
        Ok(Valid {
            input: TurnInput {
                conversation,
                message,
                sampling,
                instructions,
                earlier,
            },
            stream: self
                .stream
                .unwrap_or(false)
                .then(|| ResponseEvents::new(echo)),
            answer: Arc::new(move |finished: &Finished| {
                answered.object("completed", Some(finished), None)
            }),
            keep,
            header: None,
        })
    }
}

/// The role and text of `input[index]`: a message's (its text at most `max_chars` characters),
/// or the output message an `item_reference` names (one of the caller's stored responses; 404
/// otherwise).
async fn input_item(
    index: usize,
    item: &InputItem,
    max_chars: usize,
    incoming: &Incoming<'_>,
) -> Result<(ChatRole, String), ApiError> {
    let (backends, caller) = (&incoming.routes.backends, incoming.caller.as_str());
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
        return Ok((ChatRole::Assistant, stored.output_text));
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
    Ok((role, content.text(&param, max_chars)?))
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
    let first_kept = first_kept(history.iter().map(|message| message.role));
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
        (status = 404, description = "No such model (`model_not_found`), or no stored response of yours with `previous_response_id` (`response_not_found`)", body = OpenAiErrorBody),
        (status = 409, description = "The conversation went on after `previous_response_id` (`response_not_latest`), or it is busy (`session_busy`, `session_conflict`, `idempotency_key_in_progress`)", body = OpenAiErrorBody),
        TurnRefusals,
    )
)]
pub(crate) async fn post_responses(
    request: HttpRequest,
    body: Bytes,
    routes: Data<TurnRoutes>,
) -> Result<HttpResponse, ApiError> {
    pipeline::serve::<ResponseRequest>(request, body, routes).await
}

impl TurnWire for ResponseRequest {
    type Answer = ResponseObject;
    type Events = ResponseEvents;
    const KEY_NAMESPACE: &'static str = "responses:";

    fn reshape(error: ApiError) -> ApiError {
        as_bad_request(error)
    }

    fn fingerprint(&self, incoming: &Incoming<'_>) -> String {
        idempotency::fingerprint(&[&String::from_utf8_lossy(incoming.body)])
    }

    async fn validate(self, incoming: &Incoming<'_>) -> Result<Valid<Self>, ApiError> {
        self.checked(incoming).await
    }
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
    let (echo, finished) = Echo::stored(stored);
    Ok(HttpResponse::Ok().json(echo.object("completed", Some(&finished), None)))
}

/// The `response.*` events of a streamed response.
pub(crate) struct ResponseEvents {
    echo: Echo,
    sequence: u64,
    /// The output item and its text part were announced.
    opened: bool,
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

/// The fields of the events about the output message.
#[derive(Serialize)]
struct OfItem {
    output_index: u32,
    item: OutputMessage,
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
    fn new(echo: Echo) -> Self {
        Self {
            echo,
            sequence: 0,
            opened: false,
        }
    }

    /// An event of `kind` with `fields` and the next sequence number.
    fn event(&mut self, kind: &str, fields: impl Serialize) -> Bytes {
        let sequence_number = self.sequence;
        self.sequence += 1;
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
                    item,
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

    fn start(&mut self) -> Option<Bytes> {
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
        let mut events = self.open();
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
                item,
            },
        ));
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
