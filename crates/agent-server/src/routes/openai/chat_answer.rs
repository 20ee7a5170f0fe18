//! The answers of `POST /v1/chat/completions`: the `chat.completion` of a turn, and the
//! `chat.completion.chunk` events of a streamed one (text, the client's tool calls whole, the
//! finish reason, the usage, then `[DONE]`).

use actix_web::web::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::client_tools::AnsweredToolCall;
use super::{OpenAiError, OpenAiErrorBody, unix_now};
use crate::dto::RunEvent;
use crate::error::ApiError;
use crate::routes::turn_stream::{EventFormat, SHUTDOWN_MESSAGE, sse};
use crate::turn::Finished;

/// `chat.completion`: the agent's final answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ChatCompletion {
    /// `chatcmpl-` and the turn's id.
    id: String,
    /// Always `chat.completion`.
    object: String,
    /// Seconds since the Unix epoch.
    created: u64,
    model: String,
    /// One choice.
    choices: Vec<Choice>,
    /// The whole turn's tokens, over all its model calls.
    usage: CompletionUsage,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
struct Choice {
    index: u32,
    message: AssistantMessage,
    /// Always null.
    #[schema(value_type = Option<Object>)]
    logprobs: Option<Value>,
    /// `stop`, or `tool_calls` when the answer calls the client's tools.
    finish_reason: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
struct AssistantMessage {
    /// Always `assistant`.
    role: String,
    /// The answer; null when it only calls the client's tools.
    content: Option<String>,
    /// Always null.
    refusal: Option<String>,
    /// Calls to the client's tools: run them and send their results as `tool` messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    tool_calls: Option<Vec<AnsweredToolCall>>,
}

/// Tokens of the whole turn (all its model calls).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
pub(crate) struct CompletionUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

impl CompletionUsage {
    fn of(finished: &Finished) -> Self {
        Self {
            prompt_tokens: finished.usage.prompt_tokens,
            completion_tokens: finished.usage.completion_tokens,
            total_tokens: finished.usage.total(),
        }
    }
}

/// `stop`, or `tool_calls` when the answer calls the client's tools.
fn finish_reason(finished: &Finished) -> &'static str {
    if !finished.waiting.is_empty() {
        "tool_calls"
    } else {
        "stop"
    }
}

impl ChatCompletion {
    pub(super) fn of(finished: &Finished, model: &str) -> Self {
        let tool_calls = (!finished.waiting.is_empty()).then(|| {
            finished
                .waiting
                .iter()
                .map(|pending| AnsweredToolCall::of(&pending.call, None))
                .collect()
        });
        Self {
            id: format!("chatcmpl-{}", finished.id.simple()),
            object: "chat.completion".into(),
            created: finished.created,
            model: model.to_owned(),
            choices: vec![Choice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant".into(),
                    content: match &tool_calls {
                        Some(_) if finished.text.is_empty() => None,
                        _ => Some(finished.text.clone()),
                    },
                    refusal: None,
                    tool_calls,
                },
                logprobs: None,
                finish_reason: finish_reason(finished).into(),
            }],
            usage: CompletionUsage::of(finished),
        }
    }
}

/// `chat.completion.chunk`: a piece of the answer as it streams.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChatCompletionChunk {
    /// The same for every chunk of a response.
    id: String,
    /// Always `chat.completion.chunk`.
    object: &'static str,
    created: u64,
    model: String,
    /// One choice; none in the usage chunk.
    choices: Vec<ChunkChoice>,
    /// With `stream_options.include_usage`: null, then the turn's usage in a last chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<CompletionUsage>, nullable)]
    usage: Option<Option<CompletionUsage>>,
}

#[derive(Debug, Serialize, ToSchema)]
struct ChunkChoice {
    index: u32,
    delta: ChunkDelta,
    #[schema(value_type = Option<Object>)]
    logprobs: Option<Value>,
    /// Null until the last choice chunk: `stop` or `tool_calls`.
    finish_reason: Option<&'static str>,
}

#[derive(Debug, Default, Serialize, ToSchema)]
struct ChunkDelta {
    /// `assistant`, in the first chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<String>,
    /// Calls to the client's tools, whole, in one chunk (each with its `index`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    tool_calls: Option<Vec<AnsweredToolCall>>,
}

/// The events of a streamed chat completion. Text the model writes before calling tools is
/// streamed too (as `/agent/stream` does), set apart from the next step's text by a blank line;
/// the tool calls themselves are not sent.
pub(crate) struct Chunks {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
}

impl Chunks {
    pub(super) fn new(model: String, include_usage: bool) -> Self {
        Self {
            id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
            created: unix_now(),
            model,
            include_usage,
        }
    }

    fn chunk(&self, delta: ChunkDelta, finish_reason: Option<&'static str>) -> Bytes {
        let chunk = ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                logprobs: None,
                finish_reason,
            }],
            usage: self.include_usage.then_some(None),
        };
        sse(None, &chunk)
    }
}

impl EventFormat for Chunks {
    const SHOWS_TOOLS: bool = false;

    fn start(&mut self, _run: &RunEvent) -> Option<Bytes> {
        let delta = ChunkDelta {
            role: Some("assistant"),
            content: Some(String::new()),
            tool_calls: None,
        };
        Some(self.chunk(delta, None))
    }

    fn delta(&mut self, text: String) -> Option<Bytes> {
        let delta = ChunkDelta {
            role: None,
            content: Some(text),
            tool_calls: None,
        };
        Some(self.chunk(delta, None))
    }

    fn done(&mut self, finished: &Finished) -> Vec<Bytes> {
        let mut events = Vec::new();
        if !finished.waiting.is_empty() {
            let calls = finished
                .waiting
                .iter()
                .map(|pending| &pending.call)
                .zip(0..);
            let delta = ChunkDelta {
                tool_calls: Some(
                    calls
                        .map(|(call, index)| AnsweredToolCall::of(call, Some(index)))
                        .collect(),
                ),
                ..ChunkDelta::default()
            };
            events.push(self.chunk(delta, None));
        }
        events.push(self.chunk(ChunkDelta::default(), Some(finish_reason(finished))));
        if self.include_usage {
            let usage = ChatCompletionChunk {
                id: self.id.clone(),
                object: "chat.completion.chunk",
                created: self.created,
                model: self.model.clone(),
                choices: Vec::new(),
                usage: Some(Some(CompletionUsage::of(finished))),
            };
            events.push(sse(None, &usage));
        }
        events.push(Bytes::from_static(b"data: [DONE]\n\n"));
        events
    }

    fn error(&mut self, error: &ApiError) -> Bytes {
        sse(
            None,
            &OpenAiErrorBody {
                error: OpenAiError::from_api(error),
            },
        )
    }

    fn shutdown(&mut self) -> Bytes {
        let error = OpenAiError {
            message: SHUTDOWN_MESSAGE.into(),
            kind: "server_error".into(),
            param: None,
            code: Some("server_shutting_down".into()),
        };
        sse(None, &OpenAiErrorBody { error })
    }
}
