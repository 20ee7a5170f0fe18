//! `GET /metrics` (Prometheus text format) and `GET /openapi.json` (OpenAPI 3), generated from
//! the handlers' annotations and the request types, then fitted to the running configuration:
//! security only when API keys are set, 401/429 where access control answers them, the
//! configured limits, the streaming route only when it is served. The constraints come from the
//! constants the validation itself uses, so the document cannot promise what the server refuses.

use actix_web::{HttpResponse, web};
use agent_config::Settings;
use agent_core::SessionId;
use serde_json::{Value, json};
use utoipa::OpenApi;

use crate::dto::{
    AgentRequest, AgentResponse, DeltaEvent, MESSAGE_PATTERN, SessionList, SessionSummary,
    SessionView, ShutdownEvent, ToolCallEvent, ToolResultEvent,
};
use crate::error::{ErrorBody, ErrorCode};
use crate::idempotency::KEY_PATTERN;
use crate::metrics::AppMetrics;
use crate::middleware::QUIET_PATHS;

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub(crate) async fn metrics(
    metrics: web::Data<AppMetrics>,
    health: web::Data<agent_health::Health>,
) -> HttpResponse {
    // The readiness gauges are as fresh as the scrape (the checks' results are cached for
    // `AGENT_HEALTH__CACHE_TTL`, so scrapes and probes together run them at most that often).
    metrics.record_readiness(&health.readiness().await);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(metrics.render())
}

/// The OpenAPI document, rendered once at startup for the running configuration.
#[derive(Debug, Clone)]
pub(crate) struct Document(pub(crate) String);

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "OpenAPI 3 document of this server as configured")))]
pub(crate) async fn openapi_json(document: web::Data<Document>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document.0.clone())
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "agent-server",
        description = "An LLM agent over any OpenAI-compatible model, with durable sessions."
    ),
    paths(
        super::agent::post_agent,
        super::agent::post_agent_stream,
        super::sessions::list_sessions,
        super::sessions::get_session,
        super::sessions::delete_session,
        super::usage::get_usage,
        super::tools::list_tools,
        super::openai::list_models,
        super::openai::get_model,
        super::openai::post_chat_completions,
        super::openai::post_responses,
        super::openai::get_response,
        super::probes::health,
        super::probes::ready,
        super::probes::startup,
        metrics,
        openapi_json,
    ),
    components(schemas(
        AgentRequest,
        AgentResponse,
        SessionView,
        SessionSummary,
        SessionList,
        super::usage::UsageReport,
        super::tools::ToolList,
        super::openai::OpenAiErrorBody,
        super::openai::ChatCompletionChunk,
        ErrorBody,
        ErrorCode,
        DeltaEvent,
        ToolCallEvent,
        ToolResultEvent,
        ShutdownEvent,
    ))
)]
struct ApiDoc;

/// The routes that run turns (and so count against quotas).
const TURN_PATHS: &[&str] = &[
    "/agent",
    "/agent/stream",
    "/v1/chat/completions",
    "/v1/responses",
];

/// The document for `settings`, as JSON text.
pub(crate) fn document(settings: &Settings) -> String {
    let mut document = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    fit(&mut document, settings);
    document.to_string()
}

/// Fits the generated document to the configuration (see the module doc).
fn fit(document: &mut Value, settings: &Settings) {
    document["info"]["version"] = json!(env!("CARGO_PKG_VERSION"));
    let schemas = &mut document["components"]["schemas"];
    let message = &mut schemas["AgentRequest"]["properties"]["message"];
    message["minLength"] = json!(1);
    message["maxLength"] = json!(settings.api.max_message_chars);
    message["pattern"] = json!(MESSAGE_PATTERN);
    fit_openai(schemas, settings);
    let session = &mut schemas["AgentRequest"]["properties"]["session_id"];
    session["minLength"] = json!(1);
    session["maxLength"] = json!(SessionId::MAX_LENGTH);
    session["pattern"] = json!(SessionId::PATTERN);
    let with_keys = !settings.api_keys.is_empty();
    if with_keys {
        document["components"]["securitySchemes"] =
            json!({ "bearer": { "type": "http", "scheme": "bearer" } });
    }
    let Some(paths) = document["paths"].as_object_mut() else {
        return;
    };
    if !settings.enable_streaming {
        paths.remove("/agent/stream");
    }
    // The OpenAI-shaped streams: chunks or an error (`data: [DONE]` is not JSON), and the
    // Responses API's typed events.
    if let Some(chat) = paths.get_mut("/v1/chat/completions") {
        // Each event as a whole: unnamed, its data JSON but for the last, `[DONE]`.
        chat["post"]["responses"]["200"]["content"]["text/event-stream"]["schema"] = json!({
            "type": "object",
            "required": ["data"],
            "properties": {
                "data": {
                    "type": "string",
                    "description": "A `chat.completion.chunk` (`ChatCompletionChunk`), an error (`OpenAiErrorBody`: the stream ends without `[DONE]`), or `[DONE]`.",
                },
            },
        });
    }
    if let Some(responses) = paths.get_mut("/v1/responses") {
        // A created response can be read back by its id.
        responses["post"]["responses"]["200"]["links"] = json!({
            "GetResponse": {
                "operationId": "get_response",
                "parameters": { "response_id": "$response.body#/id" },
            },
        });
        // Each event as a whole (named events): its name, and its JSON data.
        responses["post"]["responses"]["200"]["content"]["text/event-stream"]["schema"] = json!({
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
    if let Some(stream) = paths.get_mut("/agent/stream") {
        stream["post"]["responses"]["200"]["content"]["text/event-stream"]["x-sse-events"] = json!({
            "delta": { "$ref": "#/components/schemas/DeltaEvent" },
            "tool_call": { "$ref": "#/components/schemas/ToolCallEvent" },
            "tool_result": { "$ref": "#/components/schemas/ToolResultEvent" },
            "done": { "$ref": "#/components/schemas/AgentResponse" },
            "error": { "$ref": "#/components/schemas/ErrorBody" },
            "shutdown": { "$ref": "#/components/schemas/ShutdownEvent" },
        });
    }
    let body_limit = settings.api.max_body_bytes;
    let open = crate::access::OpenPaths::new(&settings.api);
    for (path, item) in paths.iter_mut() {
        let admitted = !open.contains(path);
        let Some(operations) = item.as_object_mut() else {
            continue;
        };
        for operation in operations.values_mut() {
            // Patterns from the constants the validation uses.
            let session_id = json!({
                "type": "string",
                "minLength": 1,
                "maxLength": SessionId::MAX_LENGTH,
                "pattern": SessionId::PATTERN,
            });
            let cursor =
                json!({ "type": "string", "pattern": crate::dto::CURSOR_PATTERN.as_str() });
            let key = json!({ "type": "string", "pattern": KEY_PATTERN });
            for parameter in operation
                .get_mut("parameters")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                let schema = match (parameter["in"].as_str(), parameter["name"].as_str()) {
                    (Some("header"), Some("Idempotency-Key")) => &key,
                    (Some("query"), Some("cursor")) if path == "/sessions" => &cursor,
                    (Some("path"), Some("id")) if path.starts_with("/sessions/") => &session_id,
                    (Some("header"), Some("X-Session-Id")) => &session_id,
                    _ => continue,
                };
                parameter["schema"] = schema.clone();
            }
            let responses = &mut operation["responses"];
            let openai = path.starts_with(super::openai::PREFIX);
            if let Some(too_large) = responses.get_mut("413") {
                let limit = if openai {
                    settings.openai_api.max_body_bytes
                } else {
                    body_limit
                };
                too_large["description"] = json!(format!(
                    "The body is larger than {limit} bytes (`payload_too_large`)"
                ));
            }
            if !QUIET_PATHS.contains(&path.as_str()) {
                add_answer(
                    responses,
                    "503",
                    "This instance is at its limit of connections or turns in flight (`overloaded`)",
                );
            }
            if admitted {
                if with_keys {
                    responses["401"] = error_response(
                        "No API key, or a wrong one (`unauthorized`): send `Authorization: Bearer <key>`",
                    );
                }
                if settings.api.rate_limit_requests > 0 {
                    add_answer(
                        responses,
                        "429",
                        "Too many requests from this caller (`rate_limited`)",
                    );
                    add_answer(
                        responses,
                        "503",
                        "The shared rate limiter is unavailable (`rate_limiter_unavailable`)",
                    );
                }
            }
            if TURN_PATHS.contains(&path.as_str()) && settings.api.quotas.any() {
                add_answer(
                    responses,
                    "429",
                    "The caller has used its daily token quota (`quota_exceeded`) until the next UTC midnight",
                );
            }
            // Every API refusal that asks for a retry says when (the probes' 503 is a state);
            // a model failure says when if the model server did.
            if admitted || !QUIET_PATHS.contains(&path.as_str()) {
                retry_after_on(responses, "429", true);
                retry_after_on(responses, "503", true);
                retry_after_on(responses, "502", false);
            }
            if openai {
                in_openai_shape(responses);
            }
            if admitted && with_keys {
                operation["security"] = json!([{ "bearer": [] }]);
            }
        }
    }
}

/// The OpenAI-compatible routes answer errors in OpenAI's shape: every error body they document
/// is [`super::openai::OpenAiErrorBody`] (the added refusals, the bodies of Retry-After answers).
fn in_openai_shape(responses: &mut Value) {
    let Some(responses) = responses.as_object_mut() else {
        return;
    };
    for (status, response) in responses.iter_mut() {
        if status.starts_with('2') {
            continue;
        }
        let schema = &mut response["content"]["application/json"]["schema"];
        if schema.is_object() {
            *schema = json!({ "$ref": "#/components/schemas/OpenAiErrorBody" });
        }
    }
}

/// The OpenAI-compatible API as configured: the one model id, the roles a request may use, the
/// token bound, and the fields accepted only when they ask for nothing unsupported.
fn fit_openai(schemas: &mut Value, settings: &Settings) {
    let request = &mut schemas["ChatCompletionRequest"]["properties"];
    request["model"]["enum"] = json!([settings.openai_api.model_id]);
    for tokens in ["max_tokens", "max_completion_tokens"] {
        request[tokens]["maximum"] = json!(settings.model.max_tokens);
    }
    request["audio"] = json!({ "type": "null", "description": "Refused: text only." });
    request["logprobs"] = json!({
        "oneOf": [{ "type": "null" }, { "type": "boolean", "const": false }],
        "description": "Only false: log probabilities are not available.",
    });
    request["logit_bias"]["maxProperties"] = json!(0);
    request["stop"] = json!({
        "description": "Up to 4 sequences where the model stops.",
        "oneOf": [
            { "type": "null" },
            { "type": "string", "minLength": 1 },
            { "type": "array", "items": { "type": "string", "minLength": 1 }, "maxItems": 4 },
        ],
    });
    if !settings.openai_api.follow_system_messages {
        schemas["ChatRole"]["enum"] = json!(["user", "assistant"]);
    }
    let text = json!({ "type": "string", "pattern": MESSAGE_PATTERN });
    for (content, part) in [
        ("MessageContent", "ContentPart"),
        ("ItemContent", "ItemPart"),
    ] {
        schemas[part]["properties"]["text"] = text.clone();
        schemas[content] = json!({
            "description": "Text, or text parts (joined with newlines): not blank, no NUL character.",
            "oneOf": [
                text,
                { "type": "array", "minItems": 1, "items": { "$ref": format!("#/components/schemas/{part}") } },
            ],
        });
    }
    schemas["ResponseInput"] = json!({
        "description": "The user's message, or messages ending with it.",
        "oneOf": [
            text,
            { "type": "array", "minItems": 1, "items": { "$ref": "#/components/schemas/InputItem" } },
        ],
    });
    let request = &mut schemas["ResponseRequest"]["properties"];
    request["model"]["enum"] = json!([settings.openai_api.model_id]);
    request["max_output_tokens"]["maximum"] = json!(settings.model.max_tokens);
    request["background"] = json!({
        "oneOf": [{ "type": "null" }, { "type": "boolean", "const": false }],
        "description": "Only false: responses are answered while the request waits.",
    });
}

/// Adds `description` to the operation's answer with `status`, creating it if need be.
fn add_answer(responses: &mut Value, status: &str, description: &str) {
    match responses.get_mut(status) {
        Some(existing) => {
            let described = existing["description"].as_str().unwrap_or_default();
            existing["description"] = json!(format!("{described}; or: {description}"));
        }
        None => responses[status] = error_response(description),
    }
}

/// Documents the `Retry-After` header of a refusal (also `retry_after` in the body): always
/// sent on API 429 and 503, sent on 502 when the model server said when.
fn retry_after_on(responses: &mut Value, status: &str, required: bool) {
    if let Some(response) = responses.get_mut(status) {
        response["headers"] = json!({
            "Retry-After": {
                "description": "Seconds to wait before retrying (also `retry_after` in the body)",
                "required": required,
                "schema": { "type": "integer", "minimum": 1 },
            }
        });
    }
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } },
    })
}
