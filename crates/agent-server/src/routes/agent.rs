//! `POST /agent` and `POST /agent/stream`: run a turn and answer with its result, whole or as
//! server-sent events.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::web::{Bytes, Data};
use actix_web::{HttpMessage, HttpRequest, HttpResponse};
use agent_config::Settings;
use agent_core::AgentEvent;
use futures_util::StreamExt;
use tokio::sync::watch;

use crate::access::{ANONYMOUS, Caller, caller_name};
use crate::backends::Backends;
use crate::dto::{
    AgentRequest, AgentResponse, DeltaEvent, ShutdownEvent, ToolCallEvent, ToolResultEvent,
    parse_json,
};
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::failure_log::FailureLog;
use crate::idempotency;
use crate::turn::{ClaimToComplete, Prepared, Turns};

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
    let idempotency_key = match request.headers().get("idempotency-key") {
        None => None,
        Some(value) => Some(idempotency::parse_key(value.to_str().unwrap_or(""))?),
    };
    let fingerprint = idempotency::fingerprint(&[
        &parsed.message,
        parsed.session_id.as_deref().unwrap_or("\0none"),
    ]);
    let turn = parsed.validate(settings.api.max_message_chars, &caller_name(&request))?;
    let slot = turns.admit()?;
    let Some(key) = idempotency_key else {
        return Ok(HttpResponse::Ok().json(turns.run(turn, slot, None).await?.0));
    };
    let caller = request
        .extensions()
        .get::<Caller>()
        .map_or_else(|| ANONYMOUS.to_owned(), |caller| caller.scope.clone());
    // A retry may wait for the first request's lock and turn.
    let lease = settings.turn.turn_deadline + turns.lock_wait() + Duration::from_secs(5);
    let key = format!("{caller}:{key}");
    let claim = ClaimToComplete {
        key: key.clone(),
        retention: settings.api.idempotency_retention,
    };
    let (response, replayed) = idempotency::run_once(
        &backends,
        &key,
        &fingerprint,
        lease,
        settings.api.idempotency_retention,
        || turns.run(turn, slot, Some(claim)),
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
    let Prepared {
        request: turn_request,
        held,
    } = turns.prepare(turn, slot).await?;
    let turns = turns.into_inner();
    let mut drain = drain.get_ref().clone();
    let keepalive = settings.api.sse_keepalive;
    let events = async_stream::stream! {
        let mut events = turns.agent.run_turn_streaming(turn_request);
        let mut held = Some(held);
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(AgentEvent::TextDelta(text)) => yield sse("delta", &DeltaEvent { text }),
                    Some(AgentEvent::ToolCallStarted(call)) => {
                        yield sse("tool_call", &ToolCallEvent { id: call.id, name: call.name, arguments: call.arguments });
                    }
                    Some(AgentEvent::ToolResult { call_id, name, content, is_error }) => {
                        yield sse("tool_result", &ToolResultEvent { id: call_id, name, content, is_error });
                    }
                    Some(AgentEvent::Done(result)) => {
                        let Some(held) = held.take() else { break };
                        match turns.store(held, result, None).await {
                            Ok((response, _)) => yield sse("done", &response),
                            Err(error) => yield error_event(&error, &failures),
                        }
                        break;
                    }
                    Some(AgentEvent::Failed(error)) => {
                        if let Some(held) = &held {
                            turns.record_failure(held, &error);
                        }
                        yield error_event(&ApiError::from(error), &failures);
                        break;
                    }
                    None => break,
                },
                _ = ticker.tick() => yield Ok(Bytes::from_static(b": keep-alive\n\n")),
                changed = drain.changed() => {
                    if changed.is_ok() && *drain.borrow() {
                        tracing::info!("closing a stream: the drain window is ending");
                        yield sse("shutdown", &ShutdownEvent {
                            message: "the server is shutting down; this turn was cancelled".to_owned(),
                            stored: false,
                        });
                        break;
                    }
                }
            }
        }
    };
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(events))
}

/// One server-sent event: its name and its payload, one of the event types in the document.
fn sse(event: &str, data: &impl serde::Serialize) -> Result<Bytes, actix_web::Error> {
    let data = serde_json::to_string(data).map_err(actix_web::error::ErrorInternalServerError)?;
    Ok(Bytes::from(format!("event: {event}\ndata: {data}\n\n")))
}

fn error_event(error: &ApiError, failures: &FailureLog) -> Result<Bytes, actix_web::Error> {
    // An event stream's edge: its failures are logged here, as the middleware logs the others.
    if let Some(failure) = error.failure() {
        failures.log(&failure);
    }
    sse("error", &error.body())
}
