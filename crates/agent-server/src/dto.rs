//! The JSON shapes of the API (the tutorial's `/agent` contract kept exactly), and the strict
//! parsing of request bodies into them: 415 for a wrong content type, 400 for malformed JSON,
//! 422 naming the field for wrong types, missing, unknown or invalid fields.

use std::time::SystemTime;

use actix_web::HttpRequest;
use actix_web::http::{StatusCode, header};
use agent_core::SessionId;
use agent_storage::{SessionCursor, SessionInfo, StoredMessage};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorCode};
use crate::routes::openai::client_tools::FunctionDefinition;
use crate::runs::waiting::{RequiredAction, required_action};
use crate::turn::Finished;

pub(crate) mod format;
pub(crate) mod runs;
#[cfg(test)]
mod tests;

/// What a message must be, as a regular expression: no NUL character, and at least one that is
/// not white space (Unicode's White_Space set, which is what `str::trim` removes). Its length
/// bound is the configured `api.max_message_chars`; `/openapi.json` publishes both.
pub(crate) const MESSAGE_PATTERN: &str = r"^[^\u0000]*[^\u0000\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000]*$";

/// `POST /agent` and `POST /agent/stream`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AgentRequest {
    /// The user's message: not blank, no NUL character, at most `maxLength` characters (the
    /// whole body is also bounded in bytes: 413 above it).
    pub(crate) message: String,
    /// An existing session of this caller, or a new id of your choosing; null or absent starts
    /// a new session with a server-made UUID. Ids are per caller: another caller's session of the
    /// same id is another session.
    #[serde(default)]
    #[schema(nullable)]
    pub(crate) session_id: Option<String>,
    /// The form of the answer, as OpenAI's Chat Completions take it: `text` (the default),
    /// `json_object`, or `json_schema` (the answer is then JSON text matching the schema). Sent
    /// to the model with every call of the turn; tool calls stay free-form.
    #[serde(default)]
    #[schema(nullable)]
    pub(crate) response_format: Option<format::ChatResponseFormat>,
    /// Run the turn in the background: `POST /agent` answers `202` at once with the queued run
    /// (`Location: /runs/{id}`), which any replica then runs; poll `GET /runs/{id}`, follow
    /// `GET /runs/{id}/events`, or cancel it. `POST /agent/stream` queues it the same way and
    /// streams its events; a client going away cancels nothing (resume with `Last-Event-ID`).
    #[serde(default)]
    pub(crate) background: bool,
    /// The client's own tools (`{name, description?, parameters?}`), offered to the model beside
    /// the agent's: a call to one stops the run (`requires_action`, `submit_tool_outputs`); the
    /// client runs it and answers with `POST /runs/{id}/actions` (`tool_outputs`). At most 128;
    /// a name of the agent's own tools is refused.
    #[serde(default)]
    #[schema(nullable, max_items = 128)]
    pub(crate) tools: Option<Vec<FunctionDefinition>>,
    /// The agent that answers (an id of `GET /agents`); null or absent: the session's agent
    /// for an existing session, else the default agent. One the caller may not use is `404
    /// agent_not_found`.
    #[serde(default)]
    #[schema(nullable, pattern = "^[a-z0-9_-]{1,64}$")]
    pub(crate) agent: Option<String>,
}

/// `event: delta` of `POST /agent/stream`: a piece of the answer's text.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeltaEvent {
    pub(crate) text: String,
}

/// `event: tool_call`: the agent calls a tool.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ToolCallEvent {
    pub(crate) id: String,
    pub(crate) name: String,
    /// The JSON text of the arguments as the model produced it.
    pub(crate) arguments: String,
}

/// `event: tool_result`: what a tool answered (or why it failed, with `is_error`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct ToolResultEvent {
    /// The `id` of the `tool_call` event it answers.
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) content: String,
    pub(crate) is_error: bool,
}

/// `event: shutdown`: the server is stopping before the turn ended.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ShutdownEvent {
    pub(crate) message: String,
    /// Whether the turn was stored (always false: a cancelled turn stores nothing).
    pub(crate) stored: bool,
}

/// The answer of a turn (also the `done` event of a stream).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct AgentResponse {
    pub(crate) response: String,
    pub(crate) session_id: String,
    /// Tokens this turn used, over all its model calls.
    pub(crate) tokens_used: u64,
    /// The run this turn was (`GET /runs/{id}`).
    #[serde(default)]
    pub(crate) run_id: String,
    /// The agent that answered (`GET /agents/{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) agent: Option<String>,
    /// The model of the agent's chain that answered the turn's last model call (as the
    /// `x-agent-model` header says): another than the first when the chain fell back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) model: Option<String>,
    /// What fitting the turn to the agent's context budget did; absent when it left nothing
    /// out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) context: Option<ContextUse>,
}

/// What fitting a turn's requests to the agent's context budget did (`docs/agent.md`, "The
/// context window"). The session keeps every message whatever was left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct ContextUse {
    /// Earlier messages of the session left out of the turn's requests.
    pub(crate) messages_left_out: usize,
    /// The compaction the turn made, if it made one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) compaction: Option<CompactionUse>,
}

/// A compaction: the oldest turns summarised into one message that stands in for them in every
/// later request of the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct CompactionUse {
    /// The turns the session's summary now covers that it did not before.
    pub(crate) turns: usize,
    /// Tokens the summary's model call used (part of the turn's `tokens_used`).
    pub(crate) tokens_used: u64,
}

impl ContextUse {
    /// What a turn's result says, when it left anything out.
    pub(crate) fn of(result: &agent_core::TurnResult) -> Option<Self> {
        let compaction = result
            .compaction
            .as_ref()
            .and_then(|compaction| compaction.as_ref().ok())
            .map(|compaction| CompactionUse {
                turns: compaction.turns,
                tokens_used: compaction.usage.total(),
            });
        (result.left_out > 0 || compaction.is_some()).then_some(Self {
            messages_left_out: result.left_out,
            compaction,
        })
    }
}

impl From<&Finished> for AgentResponse {
    fn from(finished: &Finished) -> Self {
        Self {
            response: finished.text.clone(),
            session_id: finished.session.clone().unwrap_or_default(),
            tokens_used: finished.usage.total(),
            run_id: finished.run_id.clone(),
            agent: finished.agent.clone(),
            model: finished.model.clone(),
            context: finished.context.clone(),
        }
    }
}

/// What `/agent` answers: the stored turn (`AgentResponse`, the tutorial's body), or, when its run
/// stopped before tool calls the client must answer, the waiting run (`RequiresActionResponse`).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum AgentAnswer {
    Done(AgentResponse),
    Waiting(RequiresActionResponse),
}

impl From<&Finished> for AgentAnswer {
    fn from(finished: &Finished) -> Self {
        match required_action(&finished.waiting) {
            None => Self::Done(AgentResponse::from(finished)),
            Some(action) => Self::Waiting(RequiresActionResponse {
                status: WaitingStatus::RequiresAction,
                run_id: finished.run_id.clone(),
                session_id: finished.session.clone().unwrap_or_default(),
                required_action: action,
            }),
        }
    }
}

/// A run waiting for its client (also the `requires_action` event of a stream): nothing of its
/// turn is stored yet; answer with `POST /runs/{run_id}/actions`. Its session is busy meanwhile.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct RequiresActionResponse {
    pub(crate) status: WaitingStatus,
    pub(crate) run_id: String,
    pub(crate) session_id: String,
    pub(crate) required_action: RequiredAction,
}

/// Always `requires_action`.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WaitingStatus {
    RequiresAction,
}

/// The first event of `/agent/stream`: the run the stream is of, so that a client can follow it
/// (`GET /runs/{id}`) or cancel it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RunEvent {
    pub(crate) run_id: String,
    pub(crate) session_id: Option<String>,
}

/// A session's id, times and totals (an entry of `GET /sessions`).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SessionSummary {
    session_id: String,
    /// RFC 3339, UTC.
    created_at: String,
    updated_at: String,
    turn_count: u64,
    tokens: TokenTotals,
    /// The agent it belongs to (its first turn's); null for a session stored before agents were
    /// named, or without a turn.
    agent: Option<String>,
}

impl From<SessionInfo> for SessionSummary {
    fn from(info: SessionInfo) -> Self {
        Self {
            session_id: info.id.local().to_owned(),
            created_at: timestamp(info.created_at),
            updated_at: timestamp(info.updated_at),
            turn_count: info.turn_count,
            tokens: TokenTotals {
                prompt: info.usage.prompt_tokens,
                completion: info.usage.completion_tokens,
                total: info.usage.total(),
            },
            agent: info.agent,
        }
    }
}

/// `GET /sessions`: the caller's sessions, newest created first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SessionList {
    pub(crate) sessions: Vec<SessionSummary>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub(crate) next_cursor: Option<String>,
}

/// `GET /sessions/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SessionView {
    #[serde(flatten)]
    summary: SessionSummary,
    /// The most recent messages (up to `limit`), oldest first.
    messages: Vec<MessageView>,
    /// The session's summary of its earlier turns (context compaction), when it has one: it
    /// stands in for the messages it covers in later turns' requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    compaction: Option<CompactionView>,
}

#[derive(Debug, Serialize, ToSchema)]
struct CompactionView {
    summary: String,
    /// It covers the messages whose `sequence` is below this.
    covers_until_sequence: u64,
}

#[derive(Debug, Serialize, ToSchema)]
struct TokenTotals {
    prompt: u64,
    completion: u64,
    total: u64,
}

#[derive(Debug, Serialize, ToSchema)]
struct MessageView {
    sequence: u64,
    /// `user`, `assistant`, `tool` or `system`.
    role: String,
    content: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<String>,
    /// On the last message of each turn: the tokens of the whole turn.
    #[serde(skip_serializing_if = "Option::is_none")]
    tokens: Option<u64>,
    /// What the message takes of the model's context, as its agent counted it (absent: not
    /// counted, as when no context budget is set).
    #[serde(skip_serializing_if = "Option::is_none")]
    context_tokens: Option<u64>,
    /// True when the session's summary covers it (later turns are sent the summary instead).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    compacted: bool,
    created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
struct ToolCallView {
    id: String,
    name: String,
    /// The JSON text of the arguments as the model produced it.
    arguments: String,
}

pub(crate) fn timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

impl SessionView {
    pub(crate) fn new(mut info: SessionInfo, messages: Vec<StoredMessage>) -> Self {
        let compaction = info.summary.take().map(|summary| CompactionView {
            summary: summary.text,
            covers_until_sequence: summary.through,
        });
        let covered = compaction
            .as_ref()
            .map_or(0, |compaction| compaction.covers_until_sequence);
        Self {
            summary: SessionSummary::from(info),
            compaction,
            messages: messages
                .into_iter()
                .map(|stored| MessageView {
                    sequence: stored.sequence,
                    role: stored.message.role.as_str().to_owned(),
                    content: stored.message.content,
                    tool_calls: stored
                        .message
                        .tool_calls
                        .into_iter()
                        .map(|call| ToolCallView {
                            id: call.id,
                            name: call.name,
                            arguments: call.arguments,
                        })
                        .collect(),
                    tool_call_id: stored.message.tool_call_id,
                    tokens: stored.tokens,
                    context_tokens: stored.context_tokens,
                    compacted: stored.sequence < covered,
                    created_at: timestamp(stored.created_at),
                })
                .collect(),
        }
    }
}

/// Parses a JSON body strictly, with errors that name the field.
pub(crate) fn parse_json<T: DeserializeOwned>(
    request: &HttpRequest,
    body: &[u8],
) -> Result<T, ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence != "application/json" {
        return Err(ApiError::invalid(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "the body must be JSON, sent with `Content-Type: application/json`",
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|error| {
        ApiError::invalid(
            StatusCode::BAD_REQUEST,
            ErrorCode::MalformedJson,
            format!("the body is not valid JSON: {error}"),
        )
    })?;
    // serde would also read a struct from an array, positionally; the API takes objects only.
    if !value.is_object() {
        return Err(ApiError::invalid(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidRequest,
            "the body must be a JSON object",
        ));
    }
    let value = serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if path == "." {
            return ApiError::invalid(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidRequest,
                inner.to_string(),
            );
        }
        ApiError::invalid_param(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidRequest,
            path.clone(),
            format!("{path}: {inner}"),
        )
    })?;
    Ok(value)
}

/// A validated `/agent` request.
#[derive(Debug)]
pub(crate) struct ValidTurn {
    pub(crate) session: SessionId,
    pub(crate) message: String,
    /// The request named no session, so `session` was made here: nobody else can know it yet.
    pub(crate) new_session: bool,
    pub(crate) response_format: agent_core::ResponseFormat,
    /// Queued, to run apart from the request.
    pub(crate) background: bool,
}

impl AgentRequest {
    /// The turn, in `owner`'s session (see [`SessionId::owned_by`]).
    pub(crate) fn checked(
        self,
        max_message_chars: usize,
        owner: &str,
    ) -> Result<ValidTurn, ApiError> {
        let unprocessable = |message: String| {
            ApiError::invalid(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidRequest,
                message,
            )
        };
        if let Some(problem) = message_problem(&self.message, max_message_chars) {
            return Err(unprocessable(format!("message: {problem}")));
        }
        let session = match &self.session_id {
            None => SessionId::parse(&uuid::Uuid::new_v4().to_string())
                .map_err(|error| ApiError::Internal(anyhow::Error::new(error)))?,
            Some(text) => SessionId::parse(text)
                .map_err(|error| unprocessable(format!("session_id: {error}")))?,
        };
        let response_format = self
            .response_format
            .as_ref()
            .map(|format| format.checked("response_format"))
            .transpose()?
            .unwrap_or_default();
        Ok(ValidTurn {
            session: session.owned_by(owner),
            message: self.message,
            new_session: self.session_id.is_none(),
            response_format,
            background: self.background,
        })
    }
}

/// What is wrong with a turn's user message, if anything: the same rule as [`MESSAGE_PATTERN`]
/// (a test checks they agree), and at most `max_chars` characters.
pub(crate) fn message_problem(text: &str, max_chars: usize) -> Option<String> {
    if text.trim().is_empty() {
        return Some("must not be empty".into());
    }
    if text.chars().count() > max_chars {
        return Some(format!("longer than {max_chars} characters"));
    }
    if text.contains('\0') {
        return Some("must not contain NUL characters".into());
    }
    None
}

/// What [`parse_cursor`] accepts, as published in `/openapi.json`: up to 19 digits (fits a
/// `u64`), `.`, and a session id.
pub(crate) static CURSOR_PATTERN: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!(r"^[0-9]{{1,19}}\.{}", &SessionId::PATTERN[1..]));

/// A listing's cursor as the client sees it: the session's creation time in nanoseconds since
/// the Unix epoch, `.`, and its id.
pub(crate) fn cursor_text(cursor: &SessionCursor) -> String {
    listing_cursor(cursor.created_at, cursor.id.local())
}

/// A cursor [`cursor_text`] made, in `owner`'s sessions.
pub(crate) fn parse_cursor(text: &str, owner: &str) -> Result<SessionCursor, ApiError> {
    let (created_at, id) = parse_listing_cursor(text, |id| SessionId::parse(id).ok())?;
    Ok(SessionCursor {
        created_at,
        id: id.owned_by(owner),
    })
}

/// Every listing's cursor (sessions, runs): the item's creation time in nanoseconds since the
/// Unix epoch, `.`, and its id; items are listed by both, so pages neither skip nor repeat.
pub(crate) fn listing_cursor(created_at: SystemTime, id: &str) -> String {
    let nanos = created_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    format!("{nanos}.{id}")
}

/// A cursor [`listing_cursor`] made: its time, and its id as `id` reads it (422 otherwise).
pub(crate) fn parse_listing_cursor<T>(
    text: &str,
    id: impl FnOnce(&str) -> Option<T>,
) -> Result<(SystemTime, T), ApiError> {
    let invalid = || {
        ApiError::invalid(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidRequest,
            "cursor: not a next_cursor this server gave",
        )
    };
    let (nanos, text) = text.split_once('.').ok_or_else(invalid)?;
    let nanos: u64 = nanos.parse().map_err(|_| invalid())?;
    let id = id(text).ok_or_else(invalid)?;
    Ok((
        SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(nanos),
        id,
    ))
}

/// Parses a session id from a path, as `owner`'s.
pub(crate) fn session_id(text: &str, owner: &str) -> Result<SessionId, ApiError> {
    SessionId::parse(text)
        .map(|id| id.owned_by(owner))
        .map_err(|error| {
            ApiError::invalid(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidRequest,
                format!("session_id: {error}"),
            )
        })
}

/// Text or a list, the shape of OpenAI's `content` and `input`, as an untagged enum of the two
/// would read it, except that an error inside the list keeps its place (`input[2].type: unknown
/// variant ...`) where an untagged enum says only that no variant matched. The enum itself keeps
/// `#[serde(untagged)]` for its published schema.
pub(crate) enum TextOrList<T> {
    Text(String),
    List(Vec<T>),
}

impl<'de, T: Deserialize<'de>> TextOrList<T> {
    pub(crate) fn read<D: serde::Deserializer<'de>>(
        deserializer: D,
        expecting: &'static str,
    ) -> Result<Self, D::Error> {
        struct Visitor<T>(std::marker::PhantomData<T>, &'static str);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visitor<T> {
            type Value = TextOrList<T>;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str(self.1)
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(TextOrList::Text(text.to_owned()))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                sequence: A,
            ) -> Result<Self::Value, A::Error> {
                Vec::deserialize(serde::de::value::SeqAccessDeserializer::new(sequence))
                    .map(TextOrList::List)
            }
        }
        deserializer.deserialize_any(Visitor(std::marker::PhantomData, expecting))
    }
}

/// `Deserialize` for an enum of `Text(String)` and one list variant, through [`TextOrList`].
macro_rules! deserialize_text_or_list {
    ($enum:ty, $list:ident, $expecting:literal) => {
        impl<'de> serde::Deserialize<'de> for $enum {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                Ok(
                    match $crate::dto::TextOrList::read(deserializer, $expecting)? {
                        $crate::dto::TextOrList::Text(text) => Self::Text(text),
                        $crate::dto::TextOrList::List(list) => Self::$list(list),
                    },
                )
            }
        }
    };
}
pub(crate) use deserialize_text_or_list;
