//! The JSON of `/v1/chat/completions`: the request we send, and lenient response types that
//! accept what local servers send (missing ids, `null` lists, no usage).

use serde::Deserialize;
use serde_json::{Value, json};

use super::OpenAiOptions;
use crate::conversation::{Message, Role, TokenUsage, ToolCall};
use crate::error::ModelError;
use crate::model::{ChatRequest, ModelDelta, ModelReply};

pub(super) fn request_body(
    options: &OpenAiOptions,
    request: ChatRequest<'_>,
    stream: bool,
) -> Value {
    let mut body = json!({
        "model": options.model,
        "messages": request.messages.iter().map(message_json).collect::<Vec<_>>(),
        "temperature": options.temperature,
        "max_tokens": options.max_tokens,
        "stream": stream,
    });
    if stream {
        body["stream_options"] = json!({ "include_usage": true });
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|tool| {
                json!({
                    "type": "function",
                    "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": tool.parameters,
                    },
                })
            })
            .collect();
    }
    body
}

fn message_json(message: &Message) -> Value {
    match message.role {
        Role::Assistant if !message.tool_calls.is_empty() => json!({
            "role": "assistant",
            "content": if message.content.is_empty() { Value::Null } else { json!(message.content) },
            "tool_calls": message.tool_calls.iter().map(|call| json!({
                "id": call.id,
                "type": "function",
                "function": { "name": call.name, "arguments": call.arguments },
            })).collect::<Vec<_>>(),
        }),
        Role::Tool => json!({
            "role": "tool",
            "tool_call_id": message.tool_call_id.clone().unwrap_or_default(),
            "content": message.content,
        }),
        role => json!({ "role": role.as_str(), "content": message.content }),
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
    #[serde(default, deserialize_with = "null_as_default")]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    message: ResponseMessage,
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
        })
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct CompletionChunk {
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
            if choice.finish_reason.is_some() {
                deltas.push(ModelDelta::Finished);
            }
        }
        if let Some(usage) = self.usage {
            deltas.push(ModelDelta::Usage(usage.into()));
        }
        deltas
    }
}
