//! `POST /v1/chat/completions`: a turn of the agent behind OpenAI's chat completion shapes.
//! Without a session the request's `messages` are the conversation, used as given, and nothing
//! is stored but the usage; with one (`X-Session-Id`, or `metadata.session_id`) only the last
//! user message is taken and the turn runs on that stored session exactly as `POST /agent` runs
//! it. Server-side tool calls never reach the client: it would try to run them.

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::web::{Bytes, Data};
use actix_web::{HttpRequest, HttpResponse};
use agent_config::Settings;
use agent_core::{Message, Sampling};
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::chat_answer::{ChatCompletion, ChatCompletionChunk, Chunks};
use super::client_tools::{self, ChatTool, MessageToolCall};
use super::request::{
    ChatRole, Content, TurnRefusals, as_bad_request, bad, choice_is_free, first_refusal,
    turn_request, within,
};
use super::response_calls::{LAST_STORED, dangling, session_answers};
use super::{OpenAiErrorBody, agent_of_model};
use crate::dto::format::ChatResponseFormat;
use crate::dto::{deserialize_text_or_list, session_id};
use crate::error::ApiError;
use crate::idempotency;
use crate::routes::pipeline::{self, Incoming, TurnRoutes, TurnWire, Valid};
use crate::turn::{Conversation, Finished, TurnInput, WaitMode};

/// The header naming the stored session a chat completion continues (also answered).
pub(crate) const SESSION_HEADER: &str = "x-session-id";

turn_request! {
/// A chat completion request, as far as the agent takes it. Fields OpenAI clients send routinely
/// and this table does not list are ignored.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct ChatCompletionRequest {
    /// The agent's model id (`GET /v1/models`).
    model: String,
    /// The conversation, oldest first, ending with the user's new message, or with the `tool`
    /// messages answering the calls to the client's tools of the last assistant message. With a
    /// session, only those last messages are taken (the session holds the rest).
    #[schema(min_items = 1, value_type = Vec<ChatMessageByRole>)]
    messages: Vec<ChatMessage>,
    /// The client's own tools (functions), offered to the model beside the agent's: a call to
    /// one ends the answer with `finish_reason` `tool_calls`, and the client sends its result as
    /// a `tool` message. At most 128; a name of the agent's own tools is refused.
    #[serde(default)]
    #[schema(nullable, max_items = 128)]
    tools: Option<Vec<ChatTool>>,
    /// Only `auto` (the default) or `none` (the client's tools are not offered).
    #[serde(default)]
    #[schema(nullable, value_type = Option<String>, pattern = "^(auto|none)$")]
    tool_choice: Option<Value>,
    /// Whether the model may call several tools in one step (passed to the model server; its
    /// default when unset).
    #[serde(default)]
    #[schema(nullable)]
    parallel_tool_calls: Option<bool>,
    /// Answer as `chat.completion.chunk` server-sent events, ending with `data: [DONE]`.
    #[serde(default)]
    #[schema(nullable)]
    stream: Option<bool>,
    #[serde(default)]
    #[schema(nullable)]
    stream_options: Option<StreamOptions>,
    /// Most tokens each model call of the turn may produce (at most the server's
    /// `AGENT_MODEL__MAX_TOKENS`). Deprecated by OpenAI in favour of `max_completion_tokens`.
    #[serde(default)]
    #[schema(nullable, minimum = 1)]
    max_tokens: Option<u32>,
    /// As `max_tokens`; wins when both are set.
    #[serde(default)]
    #[schema(nullable, minimum = 1)]
    max_completion_tokens: Option<u32>,
    /// Only 1.
    #[serde(default)]
    #[schema(nullable, minimum = 1, maximum = 1)]
    n: Option<u32>,
    #[serde(default)]
    #[schema(nullable)]
    seed: Option<i64>,
    /// Up to 4 sequences where the model stops.
    #[serde(default)]
    #[schema(nullable)]
    stop: Option<Stop>,
    #[serde(default)]
    #[schema(nullable, minimum = -2, maximum = 2)]
    presence_penalty: Option<f64>,
    #[serde(default)]
    #[schema(nullable, minimum = -2, maximum = 2)]
    frequency_penalty: Option<f64>,
    /// The end user, for the client's own tracking; not used.
    #[serde(default)]
    #[schema(nullable)]
    #[expect(
        dead_code,
        reason = "accepted from OpenAI clients and type-checked, not used"
    )]
    user: Option<String>,
    /// `session_id` names a stored session to continue (like `X-Session-Id`); the rest is
    /// not used.
    #[serde(default)]
    #[schema(nullable)]
    metadata: Option<HashMap<String, String>>,
    /// Not used: a turn on a session is always stored, one without never is.
    #[serde(default)]
    #[schema(nullable)]
    #[expect(
        dead_code,
        reason = "accepted from OpenAI clients and type-checked, not used"
    )]
    store: Option<bool>,
    /// Refused (the agent runs its own tools).
    #[serde(default)]
    #[schema(nullable, value_type = Option<Vec<Object>>, max_items = 0)]
    functions: Option<Vec<Value>>,
    /// Only `auto` or `none`.
    #[serde(default)]
    #[schema(nullable, value_type = Option<String>, pattern = "^(auto|none)$")]
    function_call: Option<Value>,
    /// Only false: log probabilities are not available.
    #[serde(default)]
    #[schema(nullable, value_type = Option<bool>, pattern = "^false$")]
    logprobs: Option<bool>,
    /// Refused (no log probabilities).
    #[serde(default)]
    #[schema(nullable, minimum = 0, maximum = 0)]
    top_logprobs: Option<u32>,
    /// Refused: text only.
    #[serde(default)]
    #[schema(nullable, value_type = Option<Object>)]
    audio: Option<Value>,
    /// Only `["text"]`.
    #[serde(default)]
    #[schema(nullable)]
    #[expect(
        dead_code,
        reason = "accepted from OpenAI clients and type-checked, not used"
    )]
    modalities: Option<Vec<Modality>>,
    /// The form of the final answer: `text` (the default), `json_object`, or `json_schema`
    /// (with `strict`). Sent to the model with every call of the turn; the agent's tool calls
    /// stay free-form. A model server that cannot do it: 400 `response_format_unsupported`.
    #[serde(default)]
    #[schema(nullable)]
    response_format: Option<ChatResponseFormat>,
    /// Refused (not passed on).
    #[serde(default)]
    #[schema(nullable, value_type = Option<Object>)]
    logit_bias: Option<HashMap<String, Value>>,
}
}

/// `stream_options`.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct StreamOptions {
    /// Send a last chunk with the turn's usage (every other chunk has `"usage": null`).
    #[serde(default)]
    #[schema(nullable)]
    include_usage: Option<bool>,
}

/// `stop`: one sequence or a list of them.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum Stop {
    One(String),
    /// At most 4.
    Many(Vec<String>),
}

/// The only modality: text.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Modality {
    Text,
}

/// A message of the conversation (read flat, so that an error names its exact field; the
/// document describes it by role: [`ChatMessageByRole`]).
#[derive(Debug, Deserialize)]
pub(crate) struct ChatMessage {
    role: ChatMessageRole,
    #[serde(default)]
    content: Option<MessageContent>,
    #[serde(default)]
    #[expect(
        dead_code,
        reason = "accepted from OpenAI clients and type-checked, not used"
    )]
    name: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<MessageToolCall>>,
    #[serde(default)]
    tool_call_id: Option<String>,
}

/// A message of the conversation, by its role: `system` and `developer` messages follow the
/// server's system prompt, where they are, or are refused (`AGENT_OPENAI_API__SYSTEM_MESSAGES`);
/// an `assistant` message may call the client's tools (`tool_calls`); a `tool` message answers
/// one of those calls (`tool_call_id`). Content is text, or text parts: not blank, no NUL
/// character; the last message's at most `AGENT_API__MAX_MESSAGE_CHARS` characters.
#[derive(ToSchema)]
#[serde(tag = "role", rename_all = "lowercase")]
#[expect(
    dead_code,
    reason = "describes ChatMessage in the document; never built"
)]
pub(crate) enum ChatMessageByRole {
    // The user first: the role a conversation usually ends with (schema-driven fuzzers take the
    // first variant as the typical one).
    User {
        content: MessageContent,
        /// Not used.
        #[schema(nullable)]
        name: Option<String>,
    },
    Assistant {
        /// May be null (or empty) when the message calls tools.
        #[schema(nullable)]
        content: Option<MessageContent>,
        /// Calls to the client's tools (as an answer gave them).
        #[schema(nullable)]
        tool_calls: Option<Vec<MessageToolCall>>,
        /// Not used.
        #[schema(nullable)]
        name: Option<String>,
    },
    System {
        content: MessageContent,
    },
    Developer {
        content: MessageContent,
    },
    Tool {
        /// The call of the assistant message before it that this answers.
        tool_call_id: String,
        /// The tool's result (may be empty).
        content: MessageContent,
    },
}

impl ChatMessage {
    fn role(&self) -> ChatMessageRole {
        self.role
    }

    fn content(&self) -> Option<&MessageContent> {
        self.content.as_ref()
    }

    fn tool_calls(&self) -> &[MessageToolCall] {
        self.tool_calls.as_deref().unwrap_or_default()
    }

    fn tool_call_id(&self) -> &str {
        self.tool_call_id.as_deref().unwrap_or_default()
    }
}

/// A message's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ChatMessageRole {
    User,
    Assistant,
    System,
    Developer,
    Tool,
}

impl ChatMessageRole {
    /// The role as both APIs take it; none for `tool`.
    fn shared(self) -> Option<ChatRole> {
        match self {
            Self::User => Some(ChatRole::User),
            Self::Assistant => Some(ChatRole::Assistant),
            Self::System => Some(ChatRole::System),
            Self::Developer => Some(ChatRole::Developer),
            Self::Tool => None,
        }
    }
}

/// A message's content: text, or a list of text parts (joined).
#[derive(Debug, ToSchema)]
#[serde(untagged)]
pub(crate) enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

deserialize_text_or_list!(MessageContent, Parts, "text or a list of text parts");

/// A part of a message's content: only text parts (images, audio and files are refused).
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct ContentPart {
    #[serde(rename = "type")]
    #[expect(dead_code, reason = "its one value is checked by deserializing it")]
    kind: Modality,
    text: String,
}

impl MessageContent {
    fn content(&self) -> Content<'_> {
        match self {
            Self::Text(text) => Content::Text(text),
            Self::Parts(parts) => {
                Content::Parts(parts.iter().map(|part| part.text.as_str()).collect())
            }
        }
    }
}

/// The `X-Session-Id` header's text, if sent.
fn session_header(request: &actix_web::HttpRequest) -> Result<Option<&str>, ApiError> {
    request
        .headers()
        .get(SESSION_HEADER)
        .map(|value| {
            value.to_str().map_err(|_| {
                bad(
                    "X-Session-Id",
                    "X-Session-Id must be 1 to 128 of [A-Za-z0-9._-]",
                )
            })
        })
        .transpose()
}

impl TurnWire for ChatCompletionRequest {
    type Answer = ChatCompletion;
    type Events = Chunks;
    const KEY_NAMESPACE: &'static str = "chat:";

    fn reshape(error: ApiError) -> ApiError {
        as_bad_request(error)
    }

    fn fingerprint(&self, incoming: &Incoming<'_>) -> String {
        let header = session_header(incoming.request).ok().flatten();
        idempotency::fingerprint(&[
            &String::from_utf8_lossy(incoming.body),
            header.unwrap_or("\0none"),
        ])
    }

    /// The turn: the caller's, on the session `X-Session-Id` or `metadata.session_id` names, if
    /// any.
    async fn validate(self, incoming: &Incoming<'_>) -> Result<Valid<Self>, ApiError> {
        let settings = incoming.settings();
        let caller = incoming.caller.as_str();
        let header = session_header(incoming.request)?;
        let agent = agent_of_model(&self.model, caller, &incoming.routes.turns)?;
        self.refuse_unsupported()?;
        let sampling = self.sampling(settings)?;
        let named = self
            .metadata
            .as_ref()
            .and_then(|metadata| metadata.get("session_id"))
            .map(String::as_str);
        let session = match (header, named) {
            (Some(header), Some(named)) if header != named => {
                return Err(bad(
                    "metadata.session_id",
                    "X-Session-Id and metadata.session_id name different sessions",
                ));
            }
            (Some(text), _) | (None, Some(text)) => {
                Some(session_id(text, caller).map_err(|_| {
                    bad(
                        "metadata.session_id",
                        format!(
                            "session id '{text}' is not 1 to 128 of [A-Za-z0-9._-] (not . or ..)"
                        ),
                    )
                })?)
            }
            (None, None) => None,
        };
        let last = self
            .messages
            .len()
            .checked_sub(1)
            .ok_or_else(|| bad("messages", "messages must hold at least the user's message"))?;
        let client_tools = client_tools::checked(
            client_tools::of_chat(self.tools.as_deref()),
            self.tool_choice.as_ref(),
            &agent.agent,
        )
        .map_err(as_bad_request)?;
        // The conversation ends with the user's message, or with the results of the client's
        // tools the last assistant message called (they follow it, nothing else does).
        let answers_from = match self.messages[last].role() {
            ChatMessageRole::Tool => self
                .messages
                .iter()
                .rposition(|message| message.role() != ChatMessageRole::Tool)
                .map_or(0, |index| index + 1),
            _ => last,
        };
        let mut history = Vec::with_capacity(last + 1);
        let mut message = String::new();
        let mut calls: Vec<String> = Vec::new();
        for (index, chat) in self.messages.iter().enumerate() {
            let param = |field: &str| format!("messages[{index}]{field}");
            let limit = if index >= answers_from {
                settings.api.max_message_chars
            } else {
                usize::MAX
            };
            let tool_calls = chat.tool_calls();
            if !tool_calls.is_empty() && chat.role() != ChatMessageRole::Assistant {
                return Err(bad(
                    &param(".tool_calls"),
                    "only an assistant message calls tools",
                ));
            }
            let Some(role) = chat.role().shared() else {
                let answered = chat.tool_call_id();
                // On a session, the calls the last messages answer are the session's (checked
                // below): the client need not send them again.
                let on_session = session.is_some() && index >= answers_from;
                if !on_session && !calls.iter().any(|id| id == answered) {
                    return Err(bad(
                        &param(".tool_call_id"),
                        format!(
                            "a tool message answers a call of the assistant message before it;                              it called no '{answered}'"
                        ),
                    ));
                }
                let text = match chat.content() {
                    None => String::new(),
                    Some(MessageContent::Text(text)) if text.is_empty() => String::new(),
                    Some(content) => content.content().text(&param(".content"), limit)?,
                };
                history.push(Message::tool_result(answered, text));
                continue;
            };
            if index == last {
                if role != ChatRole::User {
                    return Err(bad(
                        &param(".role"),
                        "the last message must be the user's (the one the agent answers), or \
                         the results of the client's tools",
                    ));
                }
                let Some(content) = chat.content() else {
                    return Err(bad(&param(".content"), "the user's message has no content"));
                };
                message = content.content().text(&param(".content"), limit)?;
                continue;
            }
            // Checked as the document says even when a session leaves them unused.
            let text = match chat.content() {
                None if !tool_calls.is_empty() => String::new(),
                Some(MessageContent::Text(text)) if text.is_empty() && !tool_calls.is_empty() => {
                    String::new()
                }
                None => return Err(bad(&param(".content"), "the message has no content")),
                Some(content) => content.content().text(&param(".content"), limit)?,
            };
            let role = role.check(&param(".role"), settings)?;
            calls = tool_calls.iter().map(|call| call.call().id).collect();
            history.push(if tool_calls.is_empty() {
                role.message(text)
            } else {
                Message::assistant_tool_calls(
                    text,
                    tool_calls.iter().map(MessageToolCall::call).collect(),
                )
            });
        }
        // A conversation ending with tool results goes on from them: no new user message.
        let resume = (answers_from <= last && self.messages[last].role() == ChatMessageRole::Tool)
            .then(|| agent_core::Resume {
                produced: Vec::new(),
                answers: Vec::new(),
                usage: agent_core::TokenUsage::default(),
                steps: 0,
            });
        // On a session, the conversation is the session's; the results of the client's tools that
        // the request ends with answer the calls its last stored turn ended with (every one).
        let mut earlier = Vec::new();
        if let Some(session) = &session {
            if resume.is_some() || !client_tools.is_empty() {
                let answers = if resume.is_some() {
                    history.split_off(answers_from)
                } else {
                    Vec::new()
                };
                let backends = &incoming.routes.backends;
                let stored: Vec<Message> = backends
                    .conversations
                    .recent_messages(session, LAST_STORED)
                    .await?
                    .into_iter()
                    .map(|stored| stored.message)
                    .collect();
                earlier = session_answers(&dangling(&stored), answers, answers_from)?;
            }
            history.clear();
        }
        let include_usage = self
            .stream_options
            .as_ref()
            .and_then(|options| options.include_usage)
            .unwrap_or(false);
        let header = session
            .as_ref()
            .and_then(|session| HeaderValue::from_str(session.local()).ok())
            .map(|value| (HeaderName::from_static(SESSION_HEADER), value));
        let conversation = match session {
            Some(session) => Conversation::Session {
                session,
                new_session: false,
                continues_from: None,
            },
            None => Conversation::Given {
                caller: caller.to_owned(),
                history,
            },
        };
        let model = agent.id.clone();
        let stream = self
            .stream
            .unwrap_or(false)
            .then(|| Chunks::new(model.clone(), include_usage));
        Ok(Valid {
            background: false,
            input: TurnInput {
                agent,
                // `model` is required.
                agent_named: true,
                conversation,
                message,
                sampling,
                instructions: Vec::new(),
                earlier,
                // Chat Completions have no shape for an approval (see docs/api.md).
                wait_mode: WaitMode::Reject,
                resume,
                client_tools,
                context: Default::default(),
            },
            stream,
            answer: Arc::new(move |finished: &Finished| ChatCompletion::of(finished, &model)),
            keep: None,
            header,
        })
    }
}

impl ChatCompletionRequest {
    /// 400 naming the first parameter the agent cannot honour.
    fn refuse_unsupported(&self) -> Result<(), ApiError> {
        first_refusal([
            (
                self.functions
                    .as_ref()
                    .is_some_and(|functions| !functions.is_empty()),
                "functions",
                "client-side functions are not supported: the agent runs its own tools on the server",
            ),
            (
                !choice_is_free(self.function_call.as_ref()),
                "function_call",
                "only `auto` or `none`: the client offers no functions",
            ),
            (
                self.n.is_some_and(|n| n != 1),
                "n",
                "only one choice (n = 1) is supported",
            ),
            (
                self.logprobs == Some(true),
                "logprobs",
                "log probabilities are not available",
            ),
            (
                self.top_logprobs.is_some_and(|top| top > 0),
                "top_logprobs",
                "log probabilities are not available",
            ),
            (
                self.audio.as_ref().is_some_and(|audio| !audio.is_null()),
                "audio",
                "audio is not supported: text only",
            ),
            (
                self.logit_bias
                    .as_ref()
                    .is_some_and(|bias| !bias.is_empty()),
                "logit_bias",
                "logit_bias is not supported",
            ),
        ])
    }

    /// The sampling choices, each within its bounds (400 naming it otherwise).
    fn sampling(&self, settings: &Settings) -> Result<Sampling, ApiError> {
        let (param, max_tokens) = match (self.max_completion_tokens, self.max_tokens) {
            (Some(tokens), _) => ("max_completion_tokens", Some(tokens)),
            (None, tokens) => ("max_tokens", tokens),
        };
        let shared = self.shared().sampling((param, max_tokens), settings)?;
        let stop = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(one)) => vec![one.clone()],
            Some(Stop::Many(many)) if many.len() > 4 => {
                return Err(bad("stop", "at most 4 stop sequences"));
            }
            Some(Stop::Many(many)) => many.clone(),
        };
        if stop.iter().any(String::is_empty) {
            return Err(bad("stop", "a stop sequence must not be empty"));
        }
        Ok(Sampling {
            seed: self.seed,
            parallel_tool_calls: self.parallel_tool_calls,
            stop,
            presence_penalty: within("presence_penalty", self.presence_penalty, -2.0, 2.0)?,
            frequency_penalty: within("frequency_penalty", self.frequency_penalty, -2.0, 2.0)?,
            response_format: self
                .response_format
                .as_ref()
                .map(|format| format.checked("response_format"))
                .transpose()
                .map_err(as_bad_request)?
                .unwrap_or_default(),
            ..shared
        })
    }
}

/// Run a turn of the agent, answered as an OpenAI chat completion.
#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    tag = "openai",
    request_body = ChatCompletionRequest,
    params(
        ("X-Session-Id" = Option<String>, Header, description = "A stored session of yours to continue (created if new): only the last message is taken. Also `metadata.session_id`."),
        ("Idempotency-Key" = Option<String>, Header, description = "Run at most once; a retry with the same key and body gets the stored response (not with `stream`)"),
    ),
    responses(
        (status = 200, description = "`application/json`: the `chat.completion`; with `stream: true`, `text/event-stream` of `data: <chat.completion.chunk>` events ending with `data: [DONE]`, or with `data: {\"error\": …}` (nothing stored) if the turn fails after the stream began. Continuing a session, `X-Session-Id` names it.",
            content(
                (ChatCompletion = "application/json"),
                (ChatCompletionChunk = "text/event-stream"),
            ),
            headers(("X-Session-Id" = String, description = "The session continued, when one was named"))),
        (status = 404, description = "No such model (`model_not_found`)", body = OpenAiErrorBody),
        (status = 409, description = "The session is busy with another request (`session_busy`, `session_conflict`, `idempotency_key_in_progress`)", body = OpenAiErrorBody),
        TurnRefusals,
    )
)]
pub(crate) async fn post_chat_completions(
    request: HttpRequest,
    body: Bytes,
    routes: Data<TurnRoutes>,
) -> Result<HttpResponse, ApiError> {
    pipeline::serve::<ChatCompletionRequest>(request, body, routes).await
}
