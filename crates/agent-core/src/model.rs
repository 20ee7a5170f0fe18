//! The `ChatModel` port: messages and tool schemas in; an assistant message with tool calls and
//! token usage out, whole or as a stream of deltas.

use std::collections::BTreeMap;
use std::fmt::Debug;

use async_trait::async_trait;
use futures_util::stream::BoxStream;

use crate::conversation::{Message, TokenUsage, ToolCall};
use crate::error::ModelError;
use crate::format::ResponseFormat;

/// Whether `name` may name a function for OpenAI-compatible models (a tool, a response
/// format's schema): 1 to 64 of `A-Z a-z 0-9 _ -`.
pub fn is_function_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"_-".contains(&byte))
}

/// A tool as the model sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: serde_json::Value,
}

/// One model call's input.
#[derive(Debug, Clone, Copy)]
pub struct ChatRequest<'a> {
    pub messages: &'a [Message],
    pub tools: &'a [ToolSpec],
    /// The caller's sampling choices; what it leaves unset, the model's configuration decides.
    pub sampling: &'a Sampling,
}

/// Sampling parameters a client may choose per turn (the OpenAI-compatible API passes them on),
/// each within the bounds the server checked, and the form of the answer. Unset: the model's
/// configuration (temperature, max tokens) or the model server's default. Serializable so that a
/// queued run keeps it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Sampling {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// Most tokens each model call may produce (at most the configured `model.max_tokens`).
    pub max_tokens: Option<u32>,
    pub seed: Option<i64>,
    pub stop: Vec<String>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    /// Whether the model may call several tools in one step (the model server's default when
    /// unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// The form of the text answer, sent with every model call of the turn (tool calls stay
    /// free-form).
    pub response_format: ResponseFormat,
}

/// One model call's output: an assistant message (text, tool calls, or both) and its usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelReply {
    pub message: Message,
    pub usage: TokenUsage,
    /// What the model server said about the reply, for traces.
    pub meta: ReplyMeta,
}

/// What a model server says about a reply besides its content; each part when it says it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplyMeta {
    /// The model that answered (it may differ from the one asked for).
    pub model: Option<String>,
    /// The server's id of the reply.
    pub id: Option<String>,
    /// Why the model stopped (`stop`, `tool_calls`, `length`, …).
    pub finish_reason: Option<String>,
    /// The entry of a [`crate::ModelChain`] that answered (its name in the configuration).
    pub chain_model: Option<String>,
}

impl ReplyMeta {
    /// Fills what `self` lacks from `other`.
    fn merge(&mut self, other: Self) {
        self.model = self.model.take().or(other.model);
        self.id = self.id.take().or(other.id);
        self.finish_reason = other.finish_reason.or(self.finish_reason.take());
        self.chain_model = self.chain_model.take().or(other.chain_model);
    }
}

/// Who serves a model, for traces: `gen_ai.provider.name`, `gen_ai.request.model` and the
/// server's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelIdentity {
    pub provider: &'static str,
    pub model: String,
    pub server_address: Option<String>,
    pub server_port: Option<u16>,
}

/// A piece of a streamed reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelDelta {
    Text(String),
    /// A fragment of tool call number `index`; its id and name come in the first fragment,
    /// its arguments may be split across many.
    ToolCall {
        index: u32,
        id: Option<String>,
        name: Option<String>,
        arguments: String,
    },
    Usage(TokenUsage),
    /// What the server said about the reply (model, id, finish reason), in any chunk.
    Meta(ReplyMeta),
    /// The model finished its message.
    Finished,
}

pub type DeltaStream = BoxStream<'static, Result<ModelDelta, ModelError>>;

/// A chat model: the OpenAI-compatible client, the offline model, or a test double.
#[async_trait]
pub trait ChatModel: Send + Sync + Debug {
    /// Who serves the model, for the spans of its calls.
    fn identity(&self) -> ModelIdentity {
        ModelIdentity {
            provider: "unknown",
            model: "unknown".to_owned(),
            server_address: None,
            server_port: None,
        }
    }

    /// Whether the model's server answers, without spending tokens (readiness). The default
    /// answers yes: a model in the process always does.
    async fn check(&self) -> Result<(), ModelError> {
        Ok(())
    }

    /// The model's answer, whole.
    async fn complete(&self, request: ChatRequest<'_>) -> Result<ModelReply, ModelError>;

    /// The model's answer as deltas, ending with [`ModelDelta::Finished`]. The default streams
    /// the whole answer of [`ChatModel::complete`] at once.
    async fn stream(&self, request: ChatRequest<'_>) -> Result<DeltaStream, ModelError> {
        let reply = self.complete(request).await?;
        let mut deltas = Vec::new();
        if !reply.message.content.is_empty() {
            deltas.push(Ok(ModelDelta::Text(reply.message.content)));
        }
        for (index, call) in reply.message.tool_calls.into_iter().enumerate() {
            deltas.push(Ok(ModelDelta::ToolCall {
                index: index as u32,
                id: Some(call.id),
                name: Some(call.name),
                arguments: call.arguments,
            }));
        }
        deltas.push(Ok(ModelDelta::Usage(reply.usage)));
        deltas.push(Ok(ModelDelta::Meta(reply.meta)));
        deltas.push(Ok(ModelDelta::Finished));
        Ok(Box::pin(futures_util::stream::iter(deltas)))
    }
}

/// Joins deltas into a [`ModelReply`]; tool-call fragments are joined by their index.
#[derive(Debug, Default)]
pub struct ReplyAssembler {
    text: String,
    calls: BTreeMap<u32, ToolCall>,
    usage: TokenUsage,
    meta: ReplyMeta,
    finished: bool,
}

impl ReplyAssembler {
    pub fn push(&mut self, delta: ModelDelta) {
        match delta {
            ModelDelta::Text(text) => self.text.push_str(&text),
            ModelDelta::ToolCall {
                index,
                id,
                name,
                arguments,
            } => {
                let call = self.calls.entry(index).or_insert_with(|| ToolCall {
                    id: String::new(),
                    name: String::new(),
                    arguments: String::new(),
                });
                if let Some(id) = id.filter(|id| !id.is_empty()) {
                    call.id = id;
                }
                if let Some(name) = name.filter(|name| !name.is_empty()) {
                    call.name = name;
                }
                call.arguments.push_str(&arguments);
            }
            ModelDelta::Usage(usage) => self.usage = usage,
            ModelDelta::Meta(meta) => self.meta.merge(meta),
            ModelDelta::Finished => self.finished = true,
        }
    }

    /// The reply, or `Unusable` if the stream ended before the model finished.
    pub fn finish(self) -> Result<ModelReply, ModelError> {
        if !self.finished {
            return Err(ModelError::Unusable(
                "the stream ended before the model finished".into(),
            ));
        }
        let mut tool_calls = Vec::with_capacity(self.calls.len());
        for (index, mut call) in self.calls {
            if call.name.is_empty() {
                return Err(ModelError::Unusable(format!(
                    "tool call {index} has no name"
                )));
            }
            if call.id.is_empty() {
                call.id = format!("call_{index}");
            }
            tool_calls.push(call);
        }
        Ok(ModelReply {
            message: Message::assistant_tool_calls(self.text, tool_calls),
            usage: self.usage,
            meta: self.meta,
        })
    }
}
