//! `GET /metrics` (Prometheus text format) and `GET /openapi.json` (OpenAPI 3), generated from
//! the handlers' annotations and the request types, then fitted to the running configuration:
//! security only when API keys are set, 401/429 where access control answers them, the
//! configured limits, the streaming route only when it is served. The constraints come from the
//! constants the validation itself uses, so the document cannot promise what the server refuses.

use actix_web::{HttpResponse, web};
use agent_config::Settings;
use agent_core::SessionId;
use serde_json::{Value, json};
use utoipa::{OpenApi, ToSchema};

use crate::dto::{
    AgentRequest, AgentResponse, DeltaEvent, MESSAGE_PATTERN, RunEvent, SessionList,
    SessionSummary, SessionView, ShutdownEvent, ToolCallEvent, ToolResultEvent,
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
        super::runs::get_run,
        super::runs::cancel_run,
        super::actions::post_run_actions,
        super::runs::run_events,
        super::runs::list_session_runs,
        super::usage::get_usage,
        super::tools::list_tools,
        super::agents::list_agents,
        super::agents::get_agent,
        super::openai::list_models,
        super::openai::get_model,
        super::openai::post_chat_completions,
        super::openai::post_responses,
        super::openai::get_response,
        super::openai::cancel_response,
        super::probes::health,
        super::probes::ready,
        super::probes::startup,
        metrics,
        openapi_json,
    ),
    components(schemas(
        AgentRequest,
        AgentResponse,
        crate::dto::AgentAnswer,
        crate::dto::RequiresActionResponse,
        super::actions::RunActions,
        SessionView,
        SessionSummary,
        SessionList,
        crate::dto::runs::RunView,
        crate::dto::runs::RunList,
        super::usage::UsageReport,
        super::tools::ToolList,
        super::agents::AgentList,
        super::openai::OpenAiErrorBody,
        super::openai::ChatCompletionChunk,
        ErrorBody,
        ErrorCode,
        DeltaEvent,
        RunEvent,
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
    let (document, misses) = fitted(settings);
    for miss in misses {
        tracing::error!(%miss, "the OpenAPI document has no such place to fit; a test catches this");
    }
    document.to_string()
}

/// The document for `settings`, and the places the fitting looked for and did not find.
fn fitted(settings: &Settings) -> (Value, Vec<String>) {
    let document = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    let mut fitting = Fitting {
        document,
        misses: Vec::new(),
        scratch: Value::Null,
    };
    fit(&mut fitting, settings);
    (fitting.document, fitting.misses)
}

/// The generated document while it is fitted. Schemas are found by their types' names and
/// every place edited must already exist: a renamed schema, property or path is a miss (logged,
/// and failed by a test), never an edit of an empty stub.
pub(crate) struct Fitting {
    document: Value,
    misses: Vec<String>,
    /// What a miss edits instead.
    scratch: Value,
}

impl Fitting {
    /// The schema of `T`.
    pub(crate) fn schema<T: ToSchema>(&mut self) -> &mut Value {
        self.at(&["components", "schemas", &T::name()])
    }

    /// The schema of `T`'s property `name`.
    pub(crate) fn property<T: ToSchema>(&mut self, name: &str) -> &mut Value {
        self.at(&["components", "schemas", &T::name(), "properties", name])
    }

    /// The value at `keys`, which must exist (see the type's doc).
    pub(crate) fn at(&mut self, keys: &[&str]) -> &mut Value {
        let pointer: String = keys
            .iter()
            .map(|key| format!("/{}", key.replace('~', "~0").replace('/', "~1")))
            .collect();
        if self.document.pointer(&pointer).is_none() {
            self.misses.push(pointer.clone());
        }
        self.scratch = Value::Null;
        self.document
            .pointer_mut(&pointer)
            .unwrap_or(&mut self.scratch)
    }
}

/// A reference to `T`'s schema.
pub(crate) fn schema_ref<T: ToSchema>() -> Value {
    json!({ "$ref": format!("#/components/schemas/{}", T::name()) })
}

/// Fits the generated document to the configuration (see the module doc).
fn fit(fitting: &mut Fitting, settings: &Settings) {
    fitting.document["info"]["version"] = json!(env!("CARGO_PKG_VERSION"));
    let message = fitting.property::<AgentRequest>("message");
    message["minLength"] = json!(1);
    message["maxLength"] = json!(settings.api.max_message_chars);
    message["pattern"] = json!(MESSAGE_PATTERN);
    let session = fitting.property::<AgentRequest>("session_id");
    session["minLength"] = json!(1);
    session["maxLength"] = json!(SessionId::MAX_LENGTH);
    session["pattern"] = json!(SessionId::PATTERN);
    super::openai::fit(fitting, settings);
    let stream = [
        "paths",
        "/agent/stream",
        "post",
        "responses",
        "200",
        "content",
    ];
    fitting.at(&stream)["text/event-stream"]["x-sse-events"] = json!({
        "run": schema_ref::<RunEvent>(),
        "delta": schema_ref::<DeltaEvent>(),
        "tool_call": schema_ref::<ToolCallEvent>(),
        "tool_result": schema_ref::<ToolResultEvent>(),
        "done": schema_ref::<AgentResponse>(),
        "requires_action": schema_ref::<crate::dto::RequiresActionResponse>(),
        "error": schema_ref::<ErrorBody>(),
        "shutdown": schema_ref::<ShutdownEvent>(),
    });
    let document = &mut fitting.document;
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
                if settings.rate_limit.requests > 0 {
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
            *schema = schema_ref::<super::openai::OpenAiErrorBody>();
        }
    }
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
        "content": { "application/json": { "schema": schema_ref::<ErrorBody>() } },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every place the fitting edits exists in the generated document, in every configuration
    /// that changes what it edits.
    #[test]
    fn the_fitting_finds_every_schema_property_and_path_it_edits() {
        let configurations: [&[(&str, &str)]; 3] = [
            &[],
            &[
                ("ENABLE_STREAMING", "false"),
                ("AGENT_API_KEYS", "a-key-of-twenty-characters"),
                ("AGENT_OPENAI_API__SYSTEM_MESSAGES", "refuse"),
            ],
            &[("AGENT_API__RATE_LIMIT_REQUESTS", "10")],
        ];
        for variables in configurations {
            let variables = variables
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()));
            let settings = agent_config::load_from(variables.collect::<Vec<_>>())
                .unwrap()
                .settings;
            let (_, misses) = fitted(&settings);
            assert!(misses.is_empty(), "missed: {misses:?}");
        }
    }

    /// A miss is told, not edited into the document.
    #[test]
    fn a_missing_place_is_a_miss_and_the_document_is_unchanged() {
        let mut fitting = Fitting {
            document: json!({ "components": { "schemas": {} } }),
            misses: Vec::new(),
            scratch: Value::Null,
        };
        fitting.property::<AgentRequest>("message")["minLength"] = json!(1);
        assert_eq!(
            fitting.misses,
            ["/components/schemas/AgentRequest/properties/message"]
        );
        assert_eq!(fitting.document, json!({ "components": { "schemas": {} } }));
    }
}
