//! The OpenAI-compatible routes in `/openapi.json`, fitted to the configuration: the agents' ids
//! as the models, the roles a request may use, the token bound, the fields accepted only when they ask for
//! nothing unsupported, and the two event streams.

use agent_config::Settings;
use serde_json::json;

use super::chat::{ChatCompletionRequest, ContentPart, MessageContent};
use super::request::ChatRole;
use super::response_input::{ItemContent, ItemPart, ResponseInput};
use super::responses::ResponseRequest;
use crate::dto::MESSAGE_PATTERN;
use crate::routes::docs::{Fitting, schema_ref};

/// Fits the OpenAI-compatible part of the document (see the module doc).
pub(crate) fn fit(fitting: &mut Fitting, settings: &Settings) {
    let model_id = json!(settings.agent_ids());
    fitting.property::<ChatCompletionRequest>("model")["enum"] = model_id.clone();
    for tokens in ["max_tokens", "max_completion_tokens"] {
        fitting.property::<ChatCompletionRequest>(tokens)["maximum"] =
            json!(settings.model.max_tokens);
    }
    *fitting.property::<ChatCompletionRequest>("audio") =
        json!({ "type": "null", "description": "Refused: text only." });
    *fitting.property::<ChatCompletionRequest>("logprobs") = json!({
        "oneOf": [{ "type": "null" }, { "type": "boolean", "const": false }],
        "description": "Only false: log probabilities are not available.",
    });
    fitting.property::<ChatCompletionRequest>("logit_bias")["maxProperties"] = json!(0);
    *fitting.property::<ChatCompletionRequest>("stop") = json!({
        "description": "Up to 4 sequences where the model stops.",
        "oneOf": [
            { "type": "null" },
            { "type": "string", "minLength": 1 },
            { "type": "array", "items": { "type": "string", "minLength": 1 }, "maxItems": 4 },
        ],
    });
    if !settings.openai_api.follow_system_messages {
        fitting.schema::<ChatRole>()["enum"] = json!(["user", "assistant"]);
    }
    let text = json!({ "type": "string", "pattern": MESSAGE_PATTERN });
    let parts = |part| json!({ "type": "array", "minItems": 1, "items": part });
    let content = |part| {
        json!({
            "description": "Text, or text parts (joined with newlines): not blank, no NUL character.",
            "oneOf": [text, parts(part)],
        })
    };
    *fitting.property::<ContentPart>("text") = text.clone();
    *fitting.schema::<MessageContent>() = content(schema_ref::<ContentPart>());
    *fitting.property::<ItemPart>("text") = text.clone();
    *fitting.schema::<ItemContent>() = content(schema_ref::<ItemPart>());
    *fitting.schema::<ResponseInput>() = json!({
        "description": "The user's message, or messages ending with it.",
        "oneOf": [text, parts(schema_ref::<super::response_input::InputItem>())],
    });
    fitting.property::<ResponseRequest>("model")["enum"] = model_id;
    fitting.property::<ResponseRequest>("max_output_tokens")["maximum"] =
        json!(settings.model.max_tokens);
    fit_streams(fitting);
}

/// The OpenAI-shaped streams: chunks or an error (`data: [DONE]` is not JSON), and the
/// Responses API's typed events.
fn fit_streams(fitting: &mut Fitting) {
    let stream = |path| {
        [
            "paths",
            path,
            "post",
            "responses",
            "200",
            "content",
            "text/event-stream",
        ]
    };
    // Each event as a whole: unnamed, its data JSON but for the last, `[DONE]`.
    fitting.at(&stream("/v1/chat/completions"))["schema"] = json!({
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {
                "type": "string",
                "description": "A `chat.completion.chunk` (`ChatCompletionChunk`), an error (`OpenAiErrorBody`: the stream ends without `[DONE]`), or `[DONE]`.",
            },
        },
    });
    // A created response can be read back by its id.
    fitting.at(&["paths", "/v1/responses", "post", "responses", "200"])["links"] = json!({
        "GetResponse": {
            "operationId": "get_response",
            "parameters": { "response_id": "$response.body#/id" },
        },
    });
    // Each event as a whole (named events): its name, and its JSON data.
    fitting.at(&stream("/v1/responses"))["schema"] = json!({
        "type": "object",
        "description": "A `response.*` event (or `error`): `data` is JSON with the event's `type`, its place in the stream (`sequence_number`) and the fields of that type (OpenAI's).",
        "required": ["event", "data"],
        "properties": {
            "event": { "type": "string", "pattern": r"^(response\.[a-z_.]+|error)$" },
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {
                    "type": "object",
                    "required": ["type", "sequence_number"],
                    "properties": {
                        "type": { "type": "string" },
                        "sequence_number": { "type": "integer", "minimum": 0 },
                    },
                },
            },
        },
    });
}
