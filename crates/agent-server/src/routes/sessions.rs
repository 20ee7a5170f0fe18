//! `GET /sessions/{id}` (history and token totals) and `DELETE /sessions/{id}`.

use actix_web::http::StatusCode;
use actix_web::web::{Data, Path, Query};
use actix_web::{HttpRequest, HttpResponse};
use agent_storage::{MAX_HISTORY_WINDOW, acquire_lock};
use serde::Deserialize;

use crate::access::caller_name;
use crate::backends::Backends;
use crate::dto::{SessionView, session_id};
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::turn::Turns;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct HistoryQuery {
    /// How many of the most recent messages to return (default 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// A session's messages and token totals.
#[utoipa::path(
    get,
    path = "/sessions/{id}",
    tag = "sessions",
    params(("id" = String, Path, description = "The session id"), HistoryQuery),
    responses(
        (status = 200, body = SessionView),
        (status = 404, description = "No such session of this caller (`session_not_found`); another caller's session is not found either", body = ErrorBody),
        (status = 422, description = "Invalid id or query (`invalid_request`)", body = ErrorBody),
        (status = 500, description = "A failure of the server's own (`internal_error`)", body = ErrorBody),
        (status = 503, description = "Storage unavailable (`storage_unavailable`)", body = ErrorBody),
    )
)]
pub(crate) async fn get_session(
    request: HttpRequest,
    id: Path<String>,
    query: Query<HistoryQuery>,
    backends: Data<Backends>,
) -> Result<HttpResponse, ApiError> {
    let id = session_id(&id, &caller_name(&request))?;
    let limit = query.limit.unwrap_or(MAX_HISTORY_WINDOW);
    if !(1..=MAX_HISTORY_WINDOW).contains(&limit) {
        return Err(ApiError::invalid(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidRequest,
            format!("limit: must be from 1 to {MAX_HISTORY_WINDOW}"),
        ));
    }
    let info = backends
        .conversations
        .session(&id)
        .await?
        .ok_or_else(|| ApiError::SessionNotFound(id.local().to_owned()))?;
    let messages = backends.conversations.recent_messages(&id, limit).await?;
    Ok(HttpResponse::Ok().json(SessionView::new(info, messages)))
}

/// Erase a session and all its messages. Waits for a turn in progress on it.
#[utoipa::path(
    delete,
    path = "/sessions/{id}",
    tag = "sessions",
    params(("id" = String, Path, description = "The session id")),
    responses(
        (status = 204, description = "Erased"),
        (status = 404, description = "No such session of this caller (`session_not_found`); another caller's session is not found either", body = ErrorBody),
        (status = 409, description = "A turn on the session did not finish in time (`session_busy`)", body = ErrorBody),
        (status = 422, description = "Invalid id (`invalid_request`)", body = ErrorBody),
        (status = 500, description = "A failure of the server's own (`internal_error`)", body = ErrorBody),
        (status = 503, description = "Storage unavailable (`storage_unavailable`)", body = ErrorBody),
    )
)]
pub(crate) async fn delete_session(
    request: HttpRequest,
    id: Path<String>,
    backends: Data<Backends>,
    turns: Data<Turns>,
) -> Result<HttpResponse, ApiError> {
    let id = session_id(&id, &caller_name(&request))?;
    let guard = acquire_lock(
        &backends.locks,
        &id,
        std::time::Duration::from_secs(30),
        turns.lock_wait(),
    )
    .await?;
    let deleted = backends.conversations.delete_session(&id).await;
    let _ = guard.release().await;
    if deleted? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::SessionNotFound(id.local().to_owned()))
    }
}
