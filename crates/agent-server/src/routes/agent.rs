//! `POST /agent` and `POST /agent/stream`: run a turn and answer with its result, whole or as
//! server-sent events.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::web::{Bytes, Data};
use actix_web::{HttpRequest, HttpResponse};
use agent_config::Settings;
use agent_core::ToolCall;
use serde::Deserialize;

use crate::dto::runs::RunView;
use crate::dto::{
    AgentAnswer, AgentRequest, DeltaEvent, RunEvent, ShutdownEvent, ToolCallEvent, ToolResultEvent,
};
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::idempotency;
use crate::routes::openai::client_tools;
use crate::routes::pipeline::{self, Incoming, TurnRoutes, TurnWire, Valid};
use crate::routes::turn_stream::{EventFormat, SHUTDOWN_MESSAGE, sse_numbered};
use crate::turn::{Finished, TurnInput};

/// Run one turn of the agent.
#[utoipa::path(
    post,
    path = "/agent",
    tag = "agent",
    request_body = AgentRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Run at most once; a retry with the same key and body gets the stored response")),
    responses(
        (status = 200, description = "The turn ran and was stored (`AgentResponse`), or its run stopped before tool calls the client must answer (`RequiresActionResponse`: answer with `POST /runs/{id}/actions`)", body = AgentAnswer),
        (status = 202, description = "With `background`: the run is queued; follow `Location` (a retry with the same Idempotency-Key gets the same run)", body = RunView,
            headers(("Location" = String, description = "`/runs/{id}` of the queued run"))),
        (status = 400, description = "Malformed JSON (`malformed_json`) or Idempotency-Key (`invalid_idempotency_key`)", body = ErrorBody),
        (status = 404, description = "No agent of this id is available to the caller (`agent_not_found`), or the session was deleted while the turn ran (`session_not_found`)", body = ErrorBody),
        (status = 409, description = "The session has an active run (`session_busy`, naming it), belongs to another agent than the one named (`session_agent_mismatch`), it changed (`session_conflict`), the key's first request is running (`idempotency_key_in_progress`), or the run was cancelled (`run_cancelled`) or lost (`run_lost`)", body = ErrorBody),
        (status = 413, description = "Body too large (`payload_too_large`)", body = ErrorBody),
        (status = 415, description = "Not sent as JSON (`unsupported_media_type`)", body = ErrorBody),
        (status = 422, description = "Invalid field (`invalid_request`), reused Idempotency-Key, or a turn limit reached", body = ErrorBody),
        (status = 429, description = "With `background`: this caller has as many runs queued as it may (`too_many_queued_runs`); see Retry-After", body = ErrorBody),
        (status = 500, description = "A failure of the server's own (`internal_error`)", body = ErrorBody),
        (status = 502, description = "The model server failed", body = ErrorBody),
        (status = 503, description = "Storage unavailable, the model server's rate limit, or the queue of background runs full (`overloaded`); see Retry-After", body = ErrorBody),
        (status = 504, description = "The model or the turn timed out", body = ErrorBody),
    )
)]
pub(crate) async fn post_agent(
    request: HttpRequest,
    body: Bytes,
    routes: Data<TurnRoutes>,
) -> Result<HttpResponse, ApiError> {
    pipeline::serve::<AgentRequest>(request, body, routes).await
}

/// Run one turn, streaming its progress as server-sent events.
#[utoipa::path(
    post,
    path = "/agent/stream",
    tag = "agent",
    request_body = AgentRequest,
    responses(
        (status = 200, description = "`text/event-stream` of events, each `id: <n>` (0, 1, 2, …), `event: <name>` and `data: <JSON>`: `run` \
            (RunEvent: always first), `delta` \
            (DeltaEvent), `tool_call` (ToolCallEvent), `tool_result` (ToolResultEvent), then `done` (AgentResponse: \
            stored), `requires_action` (RequiresActionResponse: the run waits for the client; answer with `POST /runs/{id}/actions`) or `error` (ErrorBody: nothing stored), or `shutdown` (ShutdownEvent) when the server stops \
            first; `x-sse-events` maps each name to its schema. With `background`, the run is queued and these are its \
            events (`GET /runs/{id}/events` resumes them; going away cancels nothing)", content_type = "text/event-stream"),
        (status = 400, description = "Malformed JSON (`malformed_json`), or an Idempotency-Key (`invalid_request`: a stream cannot be replayed)", body = ErrorBody),
        (status = 404, description = "No agent of this id is available to the caller (`agent_not_found`)", body = ErrorBody),
        (status = 409, description = "The session has an active run (`session_busy`, naming it), or belongs to another agent than the one named (`session_agent_mismatch`)", body = ErrorBody),
        (status = 413, description = "Body too large (`payload_too_large`)", body = ErrorBody),
        (status = 415, description = "Not sent as JSON (`unsupported_media_type`)", body = ErrorBody),
        (status = 422, description = "Invalid field (`invalid_request`)", body = ErrorBody),
        (status = 429, description = "With `background`: this caller has as many runs queued as it may (`too_many_queued_runs`); see Retry-After", body = ErrorBody),
        (status = 500, description = "A failure of the server's own (`internal_error`)", body = ErrorBody),
        (status = 503, description = "Storage unavailable (`storage_unavailable`), or the queue of background runs full (`overloaded`); see Retry-After", body = ErrorBody),
    )
)]
pub(crate) async fn post_agent_stream(
    request: HttpRequest,
    body: Bytes,
    routes: Data<TurnRoutes>,
) -> Result<HttpResponse, ApiError> {
    pipeline::serve::<StreamedAgentRequest>(request, body, routes).await
}

/// `/agent`: the answer when the turn is stored.
impl TurnWire for AgentRequest {
    type Answer = AgentAnswer;
    type Events = AgentEvents;
    const KEY_NAMESPACE: &'static str = "";

    fn fingerprint(&self, _incoming: &Incoming<'_>) -> String {
        // The fields, not the body's text: the same request written otherwise is the same. A
        // response format is counted only when present, so keys stored before it existed
        // still match.
        let format = self
            .response_format
            .as_ref()
            .and_then(|format| serde_json::to_string(format).ok());
        let mut parts = vec![
            self.message.as_str(),
            self.session_id.as_deref().unwrap_or("\0none"),
        ];
        parts.extend(format.as_deref());
        // Counted only when set, as the format is.
        if self.background {
            parts.push("\0background");
        }
        let tools = self
            .tools
            .as_ref()
            .filter(|tools| !tools.is_empty())
            .and_then(|tools| serde_json::to_string(tools).ok());
        parts.extend(tools.as_deref());
        // Counted only when named, as the format is.
        let agent = self.agent.as_ref().map(|agent| format!("\0agent {agent}"));
        parts.extend(agent.as_deref());
        idempotency::fingerprint(&parts)
    }

    async fn validate(self, incoming: &Incoming<'_>) -> Result<Valid<Self>, ApiError> {
        if let Some(id) = self
            .agent
            .as_deref()
            .filter(|id| !agent_config::is_agent_id(id))
        {
            return Err(ApiError::invalid_param(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidRequest,
                "agent",
                format!("agent: '{id}' is no agent id (1 to 64 of a-z, 0-9, '_' and '-')"),
            ));
        }
        let agent_named = self.agent.is_some();
        let agent = incoming
            .routes
            .turns
            .agents
            .choose(self.agent.as_deref(), &incoming.caller)
            .map_err(|missing| missing.into_error(ErrorCode::AgentNotFound, "agent"))?;
        let client_tools = client_tools::checked(
            client_tools::of_agent(self.tools.as_deref()),
            None,
            &agent.agent,
        )?;
        let turn = self.checked(incoming.settings().api.max_message_chars, &incoming.caller)?;
        let background = turn.background;
        let mut input = TurnInput::of_agent(turn, agent, agent_named);
        input.client_tools = client_tools;
        Ok(Valid {
            background,
            input,
            stream: None,
            answer: Arc::new(|finished: &Finished| AgentAnswer::from(finished)),
            keep: None,
            header: None,
        })
    }
}

/// `/agent/stream`: the same request, answered as events.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub(crate) struct StreamedAgentRequest(AgentRequest);

impl TurnWire for StreamedAgentRequest {
    type Answer = AgentAnswer;
    type Events = AgentEvents;
    const KEY_NAMESPACE: &'static str = "";

    fn available(settings: &Settings) -> Result<(), ApiError> {
        if settings.enable_streaming {
            return Ok(());
        }
        Err(ApiError::invalid(
            StatusCode::NOT_FOUND,
            ErrorCode::StreamingDisabled,
            "streaming is turned off on this server (ENABLE_STREAMING=false); use POST /agent",
        ))
    }

    fn fingerprint(&self, incoming: &Incoming<'_>) -> String {
        self.0.fingerprint(incoming)
    }

    async fn validate(self, incoming: &Incoming<'_>) -> Result<Valid<Self>, ApiError> {
        let valid = self.0.validate(incoming).await?;
        Ok(Valid {
            stream: Some(AgentEvents::default()),
            background: valid.background,
            input: valid.input,
            answer: valid.answer,
            keep: valid.keep,
            header: valid.header,
        })
    }
}

/// `/agent/stream`'s events: named, each with its payload type and its number (`id:`, from 0:
/// the first is `run`).
#[derive(Debug, Default)]
pub(crate) struct AgentEvents {
    next: u64,
}

impl AgentEvents {
    fn event(&mut self, name: &str, data: &impl serde::Serialize) -> Bytes {
        let id = self.next;
        self.next += 1;
        sse_numbered(Some(id), Some(name), data)
    }
}

impl EventFormat for AgentEvents {
    const SHOWS_TOOLS: bool = true;

    fn at_run_event(&mut self, seq: u64) {
        self.next = seq;
    }

    fn start(&mut self, run: &RunEvent) -> Option<Bytes> {
        Some(self.event("run", run))
    }

    fn delta(&mut self, text: String) -> Option<Bytes> {
        Some(self.event("delta", &DeltaEvent { text }))
    }

    fn tool_call(&mut self, call: ToolCall) -> Option<Bytes> {
        let event = ToolCallEvent {
            id: call.id,
            name: call.name,
            arguments: call.arguments,
        };
        Some(self.event("tool_call", &event))
    }

    fn tool_result(&mut self, result: ToolResultEvent) -> Option<Bytes> {
        Some(self.event("tool_result", &result))
    }

    fn done(&mut self, finished: &Finished) -> Vec<Bytes> {
        vec![match AgentAnswer::from(finished) {
            AgentAnswer::Done(done) => self.event("done", &done),
            AgentAnswer::Waiting(waiting) => self.event("requires_action", &waiting),
        }]
    }

    fn error(&mut self, error: &ApiError) -> Bytes {
        self.event("error", &error.body())
    }

    fn shutdown(&mut self) -> Bytes {
        let event = ShutdownEvent {
            message: SHUTDOWN_MESSAGE.to_owned(),
            stored: false,
        };
        self.event("shutdown", &event)
    }
}
