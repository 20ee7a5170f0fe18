//! The spans of a turn, named and attributed after the OpenTelemetry GenAI semantic conventions,
//! version 1.37.0 (`invoke_agent`, `chat {model}`, `execute_tool {tool}`, and `compaction
//! {model}`, which they do not name), as `tracing` spans:
//! agent-core knows no tracing backend, and the server's OpenTelemetry layer reads the
//! `otel.name`, `otel.kind` and `otel.status_description` fields as the span's name, kind and
//! error status. Debug level: off (and free) unless traces or `ENABLE_TRACING` want them. Message
//! and tool contents are recorded only when the agent is told to capture them.

use serde_json::{Value, json};
use tracing::Span;
use tracing::field::Empty;

use crate::agent::AgentName;
use crate::conversation::{Message, Role, TokenUsage, ToolCall};
use crate::model::{ModelIdentity, ModelReply, Sampling};
use crate::tools::ToolSource;

/// The version of the conventions these spans follow.
pub const SEMCONV_VERSION: &str = "1.37.0";

/// The span of a whole turn.
pub(crate) fn turn(identity: &ModelIdentity, agent: Option<&AgentName>, history: usize) -> Span {
    tracing::debug_span!(
        "invoke_agent",
        otel.name = %agent.map_or_else(
            || "invoke_agent".to_owned(),
            |agent| format!("invoke_agent {}", agent.name)
        ),
        otel.kind = "internal",
        gen_ai.operation.name = "invoke_agent",
        gen_ai.agent.id = agent.map(|agent| agent.id.as_str()),
        gen_ai.agent.name = agent.map(|agent| agent.name.as_str()),
        gen_ai.provider.name = identity.provider,
        gen_ai.request.model = %identity.model,
        gen_ai.response.model = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        history = count(history),
        steps = Empty,
        error.type = Empty,
        otel.status_description = Empty,
    )
}

/// The span of one model call (the whole stream, for a streamed one).
pub(crate) fn chat(identity: &ModelIdentity, sampling: &Sampling) -> Span {
    tracing::debug_span!(
        "chat",
        otel.name = %format_args!("chat {}", identity.model),
        otel.kind = "client",
        gen_ai.operation.name = "chat",
        gen_ai.provider.name = identity.provider,
        gen_ai.request.model = %identity.model,
        gen_ai.request.temperature = sampling.temperature.map(f64::from),
        gen_ai.request.max_tokens = sampling.max_tokens.map(i64::from),
        gen_ai.request.top_p = sampling.top_p.map(f64::from),
        gen_ai.request.seed = sampling.seed,
        server.address = identity.server_address.as_deref(),
        server.port = identity.server_port.map(i64::from),
        gen_ai.response.model = Empty,
        gen_ai.response.id = Empty,
        gen_ai.response.finish_reasons = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        gen_ai.input.messages = Empty,
        gen_ai.output.messages = Empty,
        error.type = Empty,
        otel.status_description = Empty,
    )
}

/// The span of a compaction: summarising the oldest `turns` of a history that does not fit
/// (the conventions name no operation for it; its model call is an ordinary `chat` span inside).
pub(crate) fn compaction(identity: &ModelIdentity, turns: usize) -> Span {
    tracing::debug_span!(
        "compaction",
        otel.name = %format_args!("compaction {}", identity.model),
        otel.kind = "internal",
        gen_ai.operation.name = "compaction",
        gen_ai.provider.name = identity.provider,
        gen_ai.request.model = %identity.model,
        turns = count(turns),
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        error.type = Empty,
        otel.status_description = Empty,
    )
}

/// The span of one tool call; `source` is asked only when the span is enabled.
pub(crate) fn tool(call: &ToolCall, source: impl FnOnce() -> Option<ToolSource>) -> Span {
    // `function` runs in the agent's process or behind its HTTP call; an MCP server's tools are
    // an `extension`.
    let kind = || match source() {
        Some(ToolSource::Mcp { .. }) => "extension",
        _ => "function",
    };
    tracing::debug_span!(
        "execute_tool",
        otel.name = %format_args!("execute_tool {}", call.name),
        otel.kind = "internal",
        gen_ai.operation.name = "execute_tool",
        gen_ai.tool.name = %call.name,
        gen_ai.tool.call.id = %call.id,
        gen_ai.tool.type = kind(),
        gen_ai.tool.call.arguments = Empty,
        gen_ai.tool.call.result = Empty,
        error.type = Empty,
        otel.status_description = Empty,
    )
}

/// Records the usage of a model call or a turn.
pub(crate) fn record_usage(span: &Span, usage: TokenUsage) {
    if span.is_disabled() {
        return;
    }
    span.record("gen_ai.usage.input_tokens", count(usage.prompt_tokens));
    span.record("gen_ai.usage.output_tokens", count(usage.completion_tokens));
}

/// A count as the signed integer OpenTelemetry attributes hold (the bridge records unsigned
/// numbers as text).
pub fn count(value: impl TryInto<i64>) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

/// Records what the model server said about its reply, and its content when captured.
pub(crate) fn record_reply(span: &Span, reply: &ModelReply, capture: bool) {
    // A disabled span (traces and span lines off) takes nothing: each `record` looks its field
    // up by name.
    if span.is_disabled() {
        return;
    }
    record_usage(span, reply.usage);
    if let Some(model) = &reply.meta.model {
        span.record("gen_ai.response.model", model.as_str());
    }
    if let Some(id) = &reply.meta.id {
        span.record("gen_ai.response.id", id.as_str());
    }
    // A comma-separated list: the exporter turns it into the conventions' string array.
    if let Some(reason) = &reply.meta.finish_reason {
        span.record("gen_ai.response.finish_reasons", reason.as_str());
    }
    if capture {
        let mut message = message_json(&reply.message);
        if let Some(reason) = &reply.meta.finish_reason {
            message["finish_reason"] = json!(reason);
        }
        span.record(
            "gen_ai.output.messages",
            Value::Array(vec![message]).to_string(),
        );
    }
}

/// Records the messages a model call is given, when captured.
pub(crate) fn record_input(span: &Span, messages: &[Message], capture: bool) {
    if capture && !span.is_disabled() {
        let messages: Vec<Value> = messages.iter().map(message_json).collect();
        span.record("gen_ai.input.messages", Value::Array(messages).to_string());
    }
}

/// Records a tool call's arguments and result, when captured, and its failure.
pub(crate) fn record_tool(span: &Span, call: &ToolCall, result: &str, failed: bool, capture: bool) {
    if span.is_disabled() {
        return;
    }
    if failed {
        span.record("error.type", "tool_error");
        span.record("otel.status_description", result);
    }
    if capture {
        span.record("gen_ai.tool.call.arguments", call.arguments.as_str());
        span.record("gen_ai.tool.call.result", result);
    }
}

/// Marks a span failed: `error.type` and the error status with its message.
pub(crate) fn record_error(span: &Span, kind: &str, message: &dyn std::fmt::Display) {
    if span.is_disabled() {
        return;
    }
    span.record("error.type", kind);
    span.record("otel.status_description", tracing::field::display(message));
}

/// A message in the conventions' JSON shape: a role and its parts.
fn message_json(message: &Message) -> Value {
    let role = match message.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    };
    let mut parts = Vec::new();
    if message.role == Role::Tool {
        parts.push(json!({
            "type": "tool_call_response",
            "id": message.tool_call_id,
            "response": message.content,
        }));
    } else if !message.content.is_empty() {
        parts.push(json!({"type": "text", "content": message.content}));
    }
    for call in &message.tool_calls {
        let arguments = serde_json::from_str::<Value>(&call.arguments)
            .unwrap_or_else(|_| Value::String(call.arguments.clone()));
        parts.push(json!({
            "type": "tool_call",
            "id": call.id,
            "name": call.name,
            "arguments": arguments,
        }));
    }
    json!({"role": role, "parts": parts})
}
