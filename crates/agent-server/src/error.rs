//! API errors and their one JSON shape, `{"error":{"code":"...","message":"..."}}`, the mapping
//! from storage and agent failures to statuses, and the errors that stop startup.

use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::http::header;
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpResponse, ResponseError};
use agent_core::{AgentError, ModelError, SessionId};
use agent_storage::{RunStatus, StorageError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::failure_log::Failure;

/// Every error code the API answers with, in the `code` of the error body. Stable: clients may
/// match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No route for this method and path.
    NotFound,
    /// The path exists, the method does not (see `Allow`).
    MethodNotAllowed,
    /// The request could not be read as HTTP (actix-web's own 400).
    BadRequest,
    /// The body is not valid JSON.
    MalformedJson,
    /// A field is missing, unknown, of the wrong type or invalid (the message names it).
    InvalidRequest,
    /// `Idempotency-Key` is not 1 to 255 visible ASCII characters.
    InvalidIdempotencyKey,
    /// The `Idempotency-Key` was used with a different body.
    IdempotencyKeyReused,
    /// A request with this `Idempotency-Key` is still running.
    IdempotencyKeyInProgress,
    /// No API key, or a wrong one.
    Unauthorized,
    /// A browser's CORS preflight from an origin that may not call this API.
    OriginNotAllowed,
    /// This caller may not do this (read another caller's usage).
    Forbidden,
    /// The body is larger than the configured limit.
    PayloadTooLarge,
    /// The body is not sent as `application/json`.
    UnsupportedMediaType,
    /// The request line is too long.
    UriTooLong,
    /// The headers are too large.
    RequestHeaderFieldsTooLarge,
    /// The request was not received in time.
    RequestTimeout,
    /// Too many requests from this caller; see `Retry-After`.
    RateLimited,
    /// The caller has used its daily token quota; see `Retry-After` (the next UTC midnight).
    QuotaExceeded,
    /// The caller has as many background runs queued as it may; see `Retry-After`.
    TooManyQueuedRuns,
    /// No such session.
    SessionNotFound,
    /// Another request is running a turn on this session.
    SessionBusy,
    /// The session changed while this turn ran; nothing was stored.
    SessionConflict,
    /// The session belongs to another agent than the one the request names (a session's agent
    /// is its first turn's).
    SessionAgentMismatch,
    /// No run of this caller has this id.
    RunNotFound,
    /// The run has already finished (a cancel of a finished run).
    RunFinished,
    /// The run is not waiting for an answer (an answer to a run that is not, or no longer,
    /// `requires_action`).
    RunNotWaiting,
    /// The run waited for its client's answer longer than it may; nothing was stored (a run's
    /// error only).
    ActionExpired,
    /// The run ended longer ago than its events are kept.
    RunEventsExpired,
    /// The run was cancelled before its turn was stored; nothing was stored.
    RunCancelled,
    /// The run was failed as lost (its lease expired before it finished); nothing was stored.
    RunLost,
    /// The client went away before its run finished; nothing was stored (a run's error only).
    ClientDisconnected,
    /// The server shut down before the run finished; nothing was stored.
    Shutdown,
    /// Streaming is turned off on this server.
    StreamingDisabled,
    /// The turn reached its limit of model calls; nothing was stored.
    StepLimitExceeded,
    /// The turn reached its token budget; nothing was stored.
    TurnTokenBudgetExceeded,
    /// The session reached its token budget; nothing was stored.
    SessionTokenBudgetExceeded,
    /// Postgres or Redis is unavailable; nothing was stored.
    StorageUnavailable,
    /// The shared rate limiter (Redis) is unavailable.
    RateLimiterUnavailable,
    /// The model server is rate limiting this service.
    ModelRateLimited,
    /// The model server failed.
    ModelUnavailable,
    /// The model server refused this service's credentials.
    ModelAuthenticationFailed,
    /// The model server answered something unusable.
    ModelBadResponse,
    /// The model server rejected the request.
    ModelRejectedRequest,
    /// The conversation does not fit the model's context window; nothing was stored.
    ContextLengthExceeded,
    /// The model server cannot answer in the requested `response_format`; nothing was stored.
    ResponseFormatUnsupported,
    /// The OpenAI-compatible API was asked for a model that is none of the caller's agents.
    ModelNotFound,
    /// No agent of this id is available to the caller (`agent` on `/agent`, `GET /agents/{id}`).
    AgentNotFound,
    /// No stored response of this caller has this id (`previous_response_id`,
    /// `GET /v1/responses/{id}`).
    ResponseNotFound,
    /// `previous_response_id` names a response the conversation already went on from.
    ResponseNotLatest,
    /// The model server did not answer in time.
    ModelTimeout,
    /// The turn did not finish within its deadline.
    TurnDeadlineExceeded,
    /// This instance is at its limit of connections or turns in flight; see `Retry-After`.
    Overloaded,
    /// A failure of the server's own; the body reveals nothing.
    InternalError,
}

impl ErrorCode {
    /// The code of an error response actix-web made itself, by its status.
    fn of_status(status: StatusCode) -> Self {
        match status.as_u16() {
            400 => Self::BadRequest,
            401 => Self::Unauthorized,
            404 => Self::NotFound,
            405 => Self::MethodNotAllowed,
            408 => Self::RequestTimeout,
            413 => Self::PayloadTooLarge,
            414 => Self::UriTooLong,
            415 => Self::UnsupportedMediaType,
            429 => Self::RateLimited,
            431 => Self::RequestHeaderFieldsTooLarge,
            status if status < 500 => Self::InvalidRequest,
            _ => Self::InternalError,
        }
    }
}

/// The code as the body spells it: its serde name, the one place the spelling lives.
impl std::fmt::Display for ErrorCode {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::String(code)) => formatter.write_str(&code),
            _ => write!(formatter, "{self:?}"),
        }
    }
}

/// What caused a 5xx answer, kept for the log line.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no route for {method} {path}")]
    NotFound { method: Method, path: String },
    #[error("{method} is not allowed here; allowed: {allow}")]
    MethodNotAllowed { method: Method, allow: &'static str },
    /// The client's request is wrong: 400, 413, 415 or 422 with a specific code; `param` names
    /// the request parameter at fault where one is (OpenAI's error shape says it).
    #[error("{message}")]
    Invalid {
        status: StatusCode,
        code: ErrorCode,
        message: String,
        param: Option<String>,
    },
    #[error("a valid API key is required: send `Authorization: Bearer <key>`")]
    Unauthorized,
    #[error("too many requests; retry in {} s", retry_after.as_secs().max(1))]
    RateLimited { retry_after: Duration },
    /// 429 `quota_exceeded`: the caller's daily token quota is used up until `retry_after`.
    #[error("{message}")]
    QuotaExceeded {
        message: String,
        retry_after: Duration,
    },
    /// 429 with another code than `rate_limited` (a cap of the caller's reached).
    #[error("{message}")]
    Limited {
        code: ErrorCode,
        message: String,
        retry_after: Duration,
    },
    #[error("session {0} was not found")]
    SessionNotFound(String),
    #[error("{message}")]
    Conflict { code: ErrorCode, message: String },
    /// A dependency is down or saturated; retrying later may work. The cause is logged, once,
    /// where the response is made.
    #[error("{message}")]
    Unavailable {
        code: ErrorCode,
        message: String,
        retry_after: Option<Duration>,
        #[source]
        cause: Option<Cause>,
    },
    /// The model server failed (502) or timed out (504); `retry_after` when it said when to
    /// come back.
    #[error("{message}")]
    Upstream {
        status: StatusCode,
        code: ErrorCode,
        message: String,
        retry_after: Option<Duration>,
        #[source]
        cause: Option<Cause>,
    },
    /// A failure of ours; the body reveals nothing, the cause chain goes to the log.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
    /// An error as it was answered elsewhere (to the request that ran a run, or recorded with
    /// the run), told again to someone else watching the run; its cause was logged there.
    #[error("{message}")]
    Reported {
        status: StatusCode,
        code: ErrorCode,
        message: String,
        retry_after: Option<u64>,
    },
}

impl ApiError {
    pub(crate) fn invalid(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Invalid {
            status,
            code,
            message: message.into(),
            param: None,
        }
    }

    /// An [`ApiError::Invalid`] naming the request parameter at fault.
    pub(crate) fn invalid_param(
        status: StatusCode,
        code: ErrorCode,
        param: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            status,
            code,
            message: message.into(),
            param: Some(param.into()),
        }
    }

    /// A 5xx's failure with its cause chain, for the failure log (a 5xx body reveals nothing):
    /// logged once, at the edge, by `crate::failure_log`. None for a client's error.
    pub(crate) fn failure(&self) -> Option<Failure> {
        let status = self.status_code();
        if !status.is_server_error() {
            return None;
        }
        let (chain, ours) = match self {
            Self::Internal(error) => (format!("{error:#}"), true),
            other => (error_chain(other), false),
        };
        Some(Failure {
            status: status.as_u16(),
            code: self.code(),
            chain,
            ours,
        })
    }

    /// When a retry is the right move, after how many whole seconds (at least 1): the
    /// `Retry-After` header, and `retry_after` in the body for clients that read no headers (a
    /// stream's `error` event).
    pub(crate) fn retry_after_seconds(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after }
            | Self::QuotaExceeded { retry_after, .. }
            | Self::Limited { retry_after, .. }
            | Self::Unavailable {
                retry_after: Some(retry_after),
                ..
            }
            | Self::Upstream {
                retry_after: Some(retry_after),
                ..
            } => Some(retry_after.as_secs_f64().ceil().max(1.0) as u64),
            Self::Reported { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The error body: code, message (nothing internal for a failure of ours) and retry hint.
    pub(crate) fn body(&self) -> ErrorBody {
        let mut body = ErrorBody::new(self.code(), &self.message());
        body.error.retry_after = self.retry_after_seconds();
        body
    }

    /// What the client is told: nothing internal for a failure of ours.
    pub(crate) fn message(&self) -> String {
        if matches!(self, Self::Internal(_)) {
            "internal error".to_owned()
        } else {
            self.to_string()
        }
    }

    /// The request parameter at fault, when the error names one.
    pub(crate) fn param(&self) -> Option<&str> {
        match self {
            Self::Invalid { param, .. } => param.as_deref(),
            _ => None,
        }
    }

    /// The stable, machine-readable code in the body.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound { .. } => ErrorCode::NotFound,
            Self::MethodNotAllowed { .. } => ErrorCode::MethodNotAllowed,
            Self::Invalid { code, .. }
            | Self::Conflict { code, .. }
            | Self::Limited { code, .. }
            | Self::Unavailable { code, .. }
            | Self::Upstream { code, .. } => *code,
            Self::Unauthorized => ErrorCode::Unauthorized,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::QuotaExceeded { .. } => ErrorCode::QuotaExceeded,
            Self::SessionNotFound(_) => ErrorCode::SessionNotFound,
            Self::Internal(_) => ErrorCode::InternalError,
            Self::Reported { code, .. } => *code,
        }
    }

    /// This error as told again to another watcher of its run (see [`Self::Reported`]).
    pub(crate) fn reported(&self) -> Self {
        Self::Reported {
            status: self.status_code(),
            code: self.code(),
            message: self.message(),
            retry_after: self.retry_after_seconds(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::NotFound { .. } | Self::SessionNotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Invalid { status, .. }
            | Self::Upstream { status, .. }
            | Self::Reported { status, .. } => *status,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::RateLimited { .. } | Self::QuotaExceeded { .. } | Self::Limited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        let status = self.status_code();
        let mut response = HttpResponse::build(status);
        // The request middleware logs it, bounded, in the request's span.
        if let Some(failure) = self.failure() {
            response.extensions_mut().insert(failure);
        }
        match self {
            Self::MethodNotAllowed { allow, .. } => {
                response.insert_header((header::ALLOW, *allow));
            }
            Self::Unauthorized => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            _ => {}
        }
        if let Some(seconds) = self.retry_after_seconds() {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        let body = self.body();
        response.extensions_mut().insert(ErrorFacts {
            code: self.code(),
            message: body.error.message.clone(),
            param: match self {
                Self::Invalid { param, .. } => param.clone(),
                _ => None,
            },
        });
        response.json(body)
    }
}

impl From<StorageError> for ApiError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::SessionNotFound(session) => {
                Self::SessionNotFound(SessionId::local_part(&session).to_owned())
            }
            StorageError::Locked(session) => Self::Conflict {
                code: ErrorCode::SessionBusy,
                message: format!(
                    "session {} is busy with another request; retry when it finishes",
                    SessionId::local_part(&session)
                ),
            },
            StorageError::SessionBusy { session, run } => Self::Conflict {
                code: ErrorCode::SessionBusy,
                message: format!(
                    "session {} has an active run {run}; retry when it finishes",
                    SessionId::local_part(&session)
                ),
            },
            StorageError::RunEnded { run, status } => match status {
                RunStatus::Cancelled => Self::Conflict {
                    code: ErrorCode::RunCancelled,
                    message: format!("run {run} was cancelled; nothing was stored"),
                },
                _ => Self::Conflict {
                    code: ErrorCode::RunLost,
                    message: format!(
                        "run {run} was failed as lost (its lease expired before it finished); \
                         nothing was stored"
                    ),
                },
            },
            StorageError::Conflict { session, .. } => Self::Conflict {
                code: ErrorCode::SessionConflict,
                message: format!(
                    "session {} changed while this turn ran; nothing was stored",
                    SessionId::local_part(&session)
                ),
            },
            StorageError::Unavailable { backend, .. } => Self::Unavailable {
                code: ErrorCode::StorageUnavailable,
                message: format!("{backend} is unavailable; nothing was stored, retry later"),
                retry_after: Some(Duration::from_secs(1)),
                cause: Some(Box::new(error)),
            },
            other => Self::Internal(anyhow::Error::new(other)),
        }
    }
}

impl From<AgentError> for ApiError {
    fn from(error: AgentError) -> Self {
        let message = error.to_string();
        let limit = |code| {
            Self::invalid(
                StatusCode::UNPROCESSABLE_ENTITY,
                code,
                format!("{message}; nothing was stored"),
            )
        };
        let upstream = |status, code, cause: ModelError| Self::Upstream {
            status,
            code,
            message: message.clone(),
            retry_after: cause.retry_after(),
            cause: Some(Box::new(cause)),
        };
        match error {
            AgentError::StepLimit(_) => limit(ErrorCode::StepLimitExceeded),
            AgentError::TurnBudgetExceeded { .. } => limit(ErrorCode::TurnTokenBudgetExceeded),
            AgentError::SessionBudgetExceeded { .. } => {
                limit(ErrorCode::SessionTokenBudgetExceeded)
            }
            AgentError::DeadlineExceeded(_) => Self::Upstream {
                status: StatusCode::GATEWAY_TIMEOUT,
                code: ErrorCode::TurnDeadlineExceeded,
                message,
                retry_after: None,
                cause: None,
            },
            AgentError::ContextLengthExceeded { tokens, budget } => Self::invalid(
                StatusCode::BAD_REQUEST,
                ErrorCode::ContextLengthExceeded,
                format!(
                    "the turn needs about {tokens} tokens of context, over the agent's budget of \
                     {budget} with as much earlier history left out as its context policy allows; \
                     nothing was stored (send a shorter message, or start a new session)"
                ),
            ),
            AgentError::Model(model) => match model {
                ModelError::RateLimited { retry_after } => Self::Unavailable {
                    code: ErrorCode::ModelRateLimited,
                    message: "the model server is rate limiting this service; retry later".into(),
                    retry_after: Some(retry_after.unwrap_or(Duration::from_secs(5))),
                    cause: Some(Box::new(model)),
                },
                ModelError::Timeout(_) => {
                    upstream(StatusCode::GATEWAY_TIMEOUT, ErrorCode::ModelTimeout, model)
                }
                ModelError::Upstream { .. } => {
                    upstream(StatusCode::BAD_GATEWAY, ErrorCode::ModelUnavailable, model)
                }
                ModelError::Authentication(_) => upstream(
                    StatusCode::BAD_GATEWAY,
                    ErrorCode::ModelAuthenticationFailed,
                    model,
                ),
                ModelError::Unusable(_) => {
                    upstream(StatusCode::BAD_GATEWAY, ErrorCode::ModelBadResponse, model)
                }
                ModelError::Rejected(_) => upstream(
                    StatusCode::BAD_GATEWAY,
                    ErrorCode::ModelRejectedRequest,
                    model,
                ),
                ModelError::ContextLength(_) => Self::invalid(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::ContextLengthExceeded,
                    "the conversation is longer than the model's context window; nothing was \
                     stored (send fewer or shorter messages, or lower AGENT_TURN__HISTORY_WINDOW)",
                ),
                ModelError::FormatRefused(_) => Self::invalid(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::ResponseFormatUnsupported,
                    "the model server refused the requested response format (it may not support \
                     structured output, or not this schema); nothing was stored",
                ),
            },
        }
    }
}

/// What an error response said, kept in its extensions: the OpenAI-compatible routes answer it
/// in OpenAI's error shape instead (`crate::routes::openai`).
#[derive(Debug, Clone)]
pub(crate) struct ErrorFacts {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
    pub(crate) param: Option<String>,
}

/// The body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorDetail {
    /// Stable machine-readable code.
    code: ErrorCode,
    /// What went wrong, for humans.
    message: String,
    /// Seconds to wait before retrying, when a retry is the right move (the same as the
    /// `Retry-After` header; in a stream's `error` event, the only place it is said).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    retry_after: Option<u64>,
}

impl ErrorBody {
    pub(crate) fn new(code: ErrorCode, message: &str) -> Self {
        Self {
            error: ErrorDetail {
                code,
                message: message.to_owned(),
                retry_after: None,
            },
        }
    }
}

/// Gives every error response that is not already JSON (actix-web's own 4xx answers, say) the
/// JSON error shape, keeping its status and headers such as `Allow` or `Retry-After`.
pub(crate) fn json_error_shape<B: MessageBody + 'static>(
    response: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(
            response.map_into_left_body(),
        ));
    }
    let status = response.status();
    let (request, old) = response.into_parts();
    let code = ErrorCode::of_status(status);
    let message = if status.is_server_error() {
        "the server failed to answer this request".to_owned()
    } else {
        format!("{} {}: {}", request.method(), request.path(), status)
    };
    let mut replacement = HttpResponse::build(status).json(ErrorBody::new(code, &message));
    replacement.extensions_mut().insert(ErrorFacts {
        code,
        message,
        param: None,
    });
    for (name, value) in old.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            replacement
                .headers_mut()
                .append(name.clone(), value.clone());
        }
    }
    let response = ServiceResponse::new(request, replacement);
    Ok(ErrorHandlerResponse::Response(
        response.map_into_right_body(),
    ))
}

pub use agent_core::error_chain;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {address}")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP server failed")]
    Server(#[source] std::io::Error),
    #[error("cannot {what}")]
    Storage {
        what: &'static str,
        #[source]
        source: StorageError,
    },
    #[error("DATABASE_URL is not set: there is no database to migrate")]
    NoDatabase,
    #[error("cannot set up the model client")]
    Model(#[source] ModelError),
    #[error("cannot build the OTLP trace exporter")]
    TraceExporter(#[source] opentelemetry_otlp::ExporterBuildError),
    #[error("cannot set up the tools")]
    Tools(#[source] agent_core::ToolError),
    #[error("cannot set up the webhook sender")]
    Webhooks(#[source] reqwest::Error),
    #[error("{0}")]
    Approvals(String),
    /// An `[[agents]]` entry names what does not exist (a tool, a pattern no tool can match).
    #[error("agents ({agent}): {problem}")]
    Agent { agent: String, problem: String },
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn a_code_reads_in_logs_as_in_bodies() {
        assert_eq!(ErrorCode::SessionBusy.to_string(), "session_busy");
        assert_eq!(
            serde_json::to_value(ErrorCode::RequestHeaderFieldsTooLarge).unwrap(),
            "request_header_fields_too_large"
        );
    }
}
