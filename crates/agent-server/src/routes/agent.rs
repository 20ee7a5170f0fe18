//! `POST /agent` and `POST /agent/stream`: run a turn and answer with its result, whole or as
//! server-sent events.

use actix_web::http::StatusCode;
use actix_web::web::{Bytes, Data};
use actix_web::{HttpRequest, HttpResponse};
use agent_config::Settings;
use agent_core::ToolCall;
use tokio::sync::watch;

use crate::access::caller_name;
use crate::backends::Backends;
use crate::dto::{
    AgentRequest, AgentResponse, DeltaEvent, ShutdownEvent, ToolCallEvent, ToolResultEvent,
    parse_json,
};
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::failure_log::FailureLog;
use crate::idempotency;
use crate::routes::turn_stream::{self, EventFormat, sse};
use crate::turn::{Extras, Finished, Turns};

/// Run one turn of the agent.
#[utoipa::path(
    post,
    path = "/agent",
    tag = "agent",
    request_body = AgentRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Run at most once; a retry with the same key and body gets the stored response")),
    responses(
        (status = 200, description = "The turn ran and was stored", body = AgentResponse),
        (status = 400, description = "Malformed JSON (`malformed_json`) or Idempotency-Key (`invalid_idempotency_key`)", body = ErrorBody),
        (status = 404, description = "The session was deleted while the turn ran (`session_not_found`)", body = ErrorBody),
        (status = 409, description = "The session is busy with another request (`session_busy`, `session_conflict`, `idempotency_key_in_progress`)", body = ErrorBody),
        (status = 413, description = "Body too large (`payload_too_large`)", body = ErrorBody),
        (status = 415, description = "Not sent as JSON (`unsupported_media_type`)", body = ErrorBody),
        (status = 422, description = "Invalid field (`invalid_request`), reused Idempotency-Key, or a turn limit reached", body = ErrorBody),
        (status = 500, description = "A failure of the server's own (`internal_error`)", body = ErrorBody),
        (status = 502, description = "The model server failed", body = ErrorBody),
        (status = 503, description = "Storage unavailable, or the model server's rate limit; see Retry-After", body = ErrorBody),
        (status = 504, description = "The model or the turn timed out", body = ErrorBody),
    )
)]
pub(crate) async fn post_agent(
    request: HttpRequest,
    body: Bytes,
    turns: Data<Turns>,
    backends: Data<Backends>,
    settings: Data<Settings>,
) -> Result<HttpResponse, ApiError> {
    let parsed: AgentRequest = parse_json(&request, &body)?;
    let idempotency_key = idempotency::key_of(&request)?;
    let fingerprint = idempotency::fingerprint(&[
        &parsed.message,
        parsed.session_id.as_deref().unwrap_or("\0none"),
    ]);
    let turn = parsed.validate(settings.api.max_message_chars, &caller_name(&request))?;
    let slot = turns.admit()?;
    let Some(key) = idempotency_key else {
        let (finished, _) = turns.run(turn.into(), slot, Extras::default()).await?;
        return Ok(HttpResponse::Ok().json(AgentResponse::from(&finished)));
    };
    let (response, replayed) = idempotency::run_turn_once(
        &backends,
        &turns,
        &settings,
        idempotency::scoped(&request, "", &key),
        &fingerprint,
        turn.into(),
        slot,
        None,
        |finished: &Finished| AgentResponse::from(finished),
    )
    .await?;
    let mut answer = HttpResponse::Ok();
    if replayed {
        answer.insert_header(("Idempotent-Replayed", "true"));
    }
    Ok(answer.json(response))
}

/// Run one turn, streaming its progress as server-sent events.
#[utoipa::path(
    post,
    path = "/agent/stream",
    tag = "agent",
    request_body = AgentRequest,
    responses(
        (status = 200, description = "`text/event-stream` of events, each `event: <name>` and `data: <JSON>`: `delta` \
            (DeltaEvent), `tool_call` (ToolCallEvent), `tool_result` (ToolResultEvent), then `done` (AgentResponse: \
            stored) or `error` (ErrorBody: nothing stored), or `shutdown` (ShutdownEvent) when the server stops \
            first; `x-sse-events` maps each name to its schema", content_type = "text/event-stream"),
        (status = 400, description = "Malformed JSON (`malformed_json`)", body = ErrorBody),
        (status = 409, description = "The session is busy with another request (`session_busy`)", body = ErrorBody),
        (status = 413, description = "Body too large (`payload_too_large`)", body = ErrorBody),
        (status = 415, description = "Not sent as JSON (`unsupported_media_type`)", body = ErrorBody),
        (status = 422, description = "Invalid field (`invalid_request`)", body = ErrorBody),
        (status = 500, description = "A failure of the server's own (`internal_error`)", body = ErrorBody),
        (status = 503, description = "Storage unavailable (`storage_unavailable`); see Retry-After", body = ErrorBody),
    )
)]
pub(crate) async fn post_agent_stream(
    request: HttpRequest,
    body: Bytes,
    turns: Data<Turns>,
    settings: Data<Settings>,
    drain: Data<watch::Receiver<bool>>,
    failures: Data<FailureLog>,
) -> Result<HttpResponse, ApiError> {
    if !settings.enable_streaming {
        return Err(ApiError::invalid(
            StatusCode::NOT_FOUND,
            ErrorCode::StreamingDisabled,
            "streaming is turned off on this server (ENABLE_STREAMING=false); use POST /agent",
        ));
    }
    let parsed: AgentRequest = parse_json(&request, &body)?;
    let turn = parsed.validate(settings.api.max_message_chars, &caller_name(&request))?;
    let slot = turns.admit()?;
    // Errors up to here are plain JSON answers; from here on they are `error` events.
    let prepared = turns.prepare(turn.into(), slot).await?;
    Ok(turn_stream::respond(
        turns.into_inner(),
        prepared,
        Extras::default(),
        drain.get_ref().clone(),
        settings.api.sse_keepalive,
        failures.into_inner(),
        AgentEvents,
    ))
}

/// `/agent/stream`'s events: named, each with its payload type.
struct AgentEvents;

impl EventFormat for AgentEvents {
    fn delta(&mut self, text: String) -> Option<Bytes> {
        Some(sse(Some("delta"), &DeltaEvent { text }))
    }

    fn tool_call(&mut self, call: ToolCall) -> Option<Bytes> {
        let event = ToolCallEvent {
            id: call.id,
            name: call.name,
            arguments: call.arguments,
        };
        Some(sse(Some("tool_call"), &event))
    }

    fn tool_result(
        &mut self,
        call_id: String,
        name: String,
        content: String,
        is_error: bool,
    ) -> Option<Bytes> {
        let event = ToolResultEvent {
            id: call_id,
            name,
            content,
            is_error,
        };
        Some(sse(Some("tool_result"), &event))
    }

    fn done(&mut self, finished: &Finished) -> Vec<Bytes> {
        vec![sse(Some("done"), &AgentResponse::from(finished))]
    }

    fn error(&mut self, error: &ApiError) -> Bytes {
        sse(Some("error"), &error.body())
    }

    fn shutdown(&mut self) -> Bytes {
        let event = ShutdownEvent {
            message: "the server is shutting down; this turn was cancelled".to_owned(),
            stored: false,
        };
        sse(Some("shutdown"), &event)
    }
}
