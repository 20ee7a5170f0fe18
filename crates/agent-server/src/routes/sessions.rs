//! `GET /sessions` (the caller's sessions), `GET /sessions/{id}` (history and token totals) and
//! `DELETE /sessions/{id}`.

use actix_web::http::StatusCode;
use actix_web::web::{Data, Path, Query};
use actix_web::{HttpRequest, HttpResponse};
use agent_storage::{MAX_HISTORY_WINDOW, acquire_lock};
use serde::Deserialize;

use crate::access::caller_name;
use crate::backends::Backends;
use crate::dto::{SessionList, SessionSummary, SessionView, cursor_text, parse_cursor, session_id};
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// How many sessions to return (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<usize>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
}

/// A `limit` query parameter: `default` when absent, else 1 to `max` (422 otherwise).
pub(crate) fn limit_within(
    limit: Option<usize>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::invalid(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidRequest,
            format!("limit: must be from 1 to {max}"),
        ))
    }
}

/// The most sessions one page lists.
const MAX_PAGE: usize = 100;

/// The caller's sessions, newest created first, a page at a time. Pages neither skip nor repeat
/// sessions while others are created or continued.
#[utoipa::path(
    get,
    path = "/sessions",
    tag = "sessions",
    params(ListQuery),
    responses(
        (status = 200, body = SessionList),
        (status = 422, description = "Invalid query, or a cursor this server did not give (`invalid_request`)", body = ErrorBody),
        (status = 500, description = "A failure of the server's own (`internal_error`)", body = ErrorBody),
        (status = 503, description = "Storage unavailable (`storage_unavailable`)", body = ErrorBody),
    )
)]
pub(crate) async fn list_sessions(
    request: HttpRequest,
    query: Query<ListQuery>,
    backends: Data<Backends>,
) -> Result<HttpResponse, ApiError> {
    let owner = caller_name(&request);
    let limit = limit_within(query.limit, 20, MAX_PAGE)?;
    let after = query
        .cursor
        .as_deref()
        .map(|text| parse_cursor(text, &owner))
        .transpose()?;
    // One more than asked says whether there is a next page.
    let mut sessions = backends
        .conversations
        .list_sessions(&owner, after.as_ref(), limit + 1)
        .await?;
    let more = sessions.len() > limit;
    sessions.truncate(limit);
    let next_cursor = more
        .then(|| sessions.last().map(|last| cursor_text(&last.cursor())))
        .flatten();
    Ok(HttpResponse::Ok().json(SessionList {
        sessions: sessions.into_iter().map(SessionSummary::from).collect(),
        next_cursor,
    }))
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
    let limit = limit_within(query.limit, MAX_HISTORY_WINDOW, MAX_HISTORY_WINDOW)?;
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
