//! The JSON of `/v1/chat/completions`: the request we send, and lenient response types that
//! accept what local servers send (missing ids, `null` lists, no usage).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::OpenAiOptions;
use crate::conversation::{Message, Role, TokenUsage, ToolCall};
use crate::error::ModelError;
use crate::format::WireFormat;
use crate::model::{ChatRequest, ModelDelta, ModelReply, ReplyMeta};

/// The body of `/v1/chat/completions`, borrowing the conversation and the tool schemas: a model
/// call serialises them straight into the request, without copying them into a JSON tree first.
#[derive(Debug, Serialize)]
pub(super) struct RequestBody<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    temperature: f32,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f32>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    /// Only when the client chose it, and only with tools.
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    /// Only when the answer is not free text.
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<WireFormat<'a>>,
}

#[derive(Debug, Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// A message as the API wants it: `content` is null only for an assistant message that only
/// calls tools.
#[derive(Debug, Serialize)]
struct WireMessage<'a> {
    role: &'a str,
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<WireToolCall<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct WireToolCall<'a> {
    id: &'a str,
    r#type: &'static str,
    function: WireFunctionCall<'a>,
}

#[derive(Debug, Serialize)]
struct WireFunctionCall<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Debug, Serialize)]
struct WireTool<'a> {
    r#type: &'static str,
    function: WireFunction<'a>,
}

#[derive(Debug, Serialize)]
struct WireFunction<'a> {
    name: &'a str,
    description: &'a str,
    parameters: &'a Value,
}

pub(super) fn request_body<'a>(
    options: &'a OpenAiOptions,
    request: ChatRequest<'a>,
    stream: bool,
) -> RequestBody<'a> {
    RequestBody {
        model: &options.model,
        messages: request.messages.iter().map(message_json).collect(),
        temperature: request.sampling.temperature.unwrap_or(options.temperature),
        max_tokens: request
            .sampling
            .max_tokens
            .map_or(options.max_tokens, |tokens| tokens.min(options.max_tokens)),
        top_p: request.sampling.top_p,
        seed: request.sampling.seed,
        stop: &request.sampling.stop,
        presence_penalty: request.sampling.presence_penalty,
        frequency_penalty: request.sampling.frequency_penalty,
        stream,
        stream_options: stream.then_some(StreamOptions {
            include_usage: true,
        }),
        tools: request
            .tools
            .iter()
            .map(|tool| WireTool {
                r#type: "function",
                function: WireFunction {
                    name: &tool.name,
                    description: &tool.description,
                    parameters: &tool.parameters,
                },
            })
            .collect(),
        parallel_tool_calls: request
            .sampling
            .parallel_tool_calls
            .filter(|_| !request.tools.is_empty()),
        response_format: request.sampling.response_format.to_wire(),
    }
}

fn message_json(message: &Message) -> WireMessage<'_> {
    match message.role {
        Role::Assistant if !message.tool_calls.is_empty() => WireMessage {
            role: "assistant",
            content: (!message.content.is_empty()).then_some(message.content.as_str()),
            tool_calls: Some(
                message
                    .tool_calls
                    .iter()
                    .map(|call| WireToolCall {
                        id: &call.id,
                        r#type: "function",
                        function: WireFunctionCall {
                            name: &call.name,
                            arguments: &call.arguments,
                        },
                    })
                    .collect(),
            ),
            tool_call_id: None,
        },
        Role::Tool => WireMessage {
            role: "tool",
            content: Some(&message.content),
            tool_calls: None,
            tool_call_id: Some(message.tool_call_id.as_deref().unwrap_or_default()),
        },
        role => WireMessage {
            role: role.as_str(),
            content: Some(&message.content),
            tool_calls: None,
            tool_call_id: None,
        },
    }
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[derive(Debug, Deserialize)]
pub(super) struct CompletionResponse {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    message: ResponseMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ResponseMessage {
    #[serde(default, deserialize_with = "null_as_default")]
    content: String,
    #[serde(default, deserialize_with = "null_as_default")]
    tool_calls: Vec<ResponseToolCall>,
}

#[derive(Debug, Deserialize)]
struct ResponseToolCall {
    #[serde(default, deserialize_with = "null_as_default")]
    id: String,
    function: ResponseFunction,
}

#[derive(Debug, Deserialize)]
struct ResponseFunction {
    name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    arguments: String,
}

#[derive(Debug, Default, Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

impl From<Usage> for TokenUsage {
    fn from(usage: Usage) -> Self {
        Self {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
        }
    }
}

impl CompletionResponse {
    pub(super) fn into_reply(self) -> Result<ModelReply, ModelError> {
        let choice = self
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| ModelError::Unusable("the response has no choices".into()))?;
        let tool_calls = choice
            .message
            .tool_calls
            .into_iter()
            .enumerate()
            .map(|(index, call)| ToolCall {
                id: if call.id.is_empty() {
                    format!("call_{index}")
                } else {
                    call.id
                },
                name: call.function.name,
                arguments: call.function.arguments,
            })
            .collect();
        Ok(ModelReply {
            message: Message::assistant_tool_calls(choice.message.content, tool_calls),
            usage: self.usage.unwrap_or_default().into(),
            meta: ReplyMeta {
                model: self.model,
                id: self.id,
                finish_reason: choice.finish_reason,
                chain_model: None,
            },
        })
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct CompletionChunk {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Debug, Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Option<ChunkDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ChunkDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    tool_calls: Vec<ChunkToolCall>,
}

#[derive(Debug, Deserialize)]
struct ChunkToolCall {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<ChunkFunction>,
}

#[derive(Debug, Deserialize)]
struct ChunkFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

impl CompletionChunk {
    pub(super) fn into_deltas(self) -> Vec<ModelDelta> {
        let mut deltas = Vec::new();
        // Every chunk repeats the model and id; they are passed on with the finish reason.
        let mut meta = ReplyMeta {
            model: self.model,
            id: self.id,
            finish_reason: None,
            chain_model: None,
        };
        for choice in self.choices {
            let delta = choice.delta.unwrap_or_default();
            if let Some(text) = delta.content.filter(|text| !text.is_empty()) {
                deltas.push(ModelDelta::Text(text));
            }
            for call in delta.tool_calls {
                let function = call.function.unwrap_or(ChunkFunction {
                    name: None,
                    arguments: None,
                });
                deltas.push(ModelDelta::ToolCall {
                    index: call.index,
                    id: call.id,
                    name: function.name,
                    arguments: function.arguments.unwrap_or_default(),
                });
            }
            if let Some(reason) = choice.finish_reason {
                meta.finish_reason = Some(reason);
                deltas.push(ModelDelta::Meta(std::mem::take(&mut meta)));
                deltas.push(ModelDelta::Finished);
            }
        }
        if let Some(usage) = self.usage {
            deltas.push(ModelDelta::Usage(usage.into()));
        }
        deltas
    }
}
