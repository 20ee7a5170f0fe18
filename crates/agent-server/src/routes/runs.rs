//! `GET /runs/{id}`, `POST /runs/{id}/cancel` and `GET /sessions/{id}/runs`: a caller's runs.
//! Another caller's run does not exist for you (404, as for an id nobody used).

use actix_web::web::{Data, Path, Query};
use actix_web::{HttpRequest, HttpResponse};
use agent_storage::{Ended, RunRecord};
use serde::Deserialize;

use crate::access::caller_name;
use crate::backends::Backends;
use crate::dto::runs::{RunList, RunView, is_run_id, parse_run_cursor, run_cursor_text};
use crate::dto::session_id;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::routes::sessions::limit_within;
use crate::runs::CANCELLED;
use crate::turn::Turns;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct RunListQuery {
    /// How many runs to return (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<usize>,
    /// The previous page's `next_cursor`.
    #[param(pattern = r"^[0-9]{1,19}\.run_[0-9a-f]{32}$")]
    cursor: Option<String>,
}

/// A run of this caller: its state, and its answer or error once it has ended.
#[utoipa::path(
    get,
    path = "/runs/{id}",
    tag = "runs",
    params(("id" = String, Path, description = "The run id (`run_…`)")),
    responses(
        (status = 200, body = RunView),
        (status = 404, description = "No run of this caller has this id (`run_not_found`)", body = ErrorBody),
        (status = 500, description = "A failure of the server's own (`internal_error`)", body = ErrorBody),
        (status = 503, description = "Storage unavailable (`storage_unavailable`)", body = ErrorBody),
    )
)]
pub(crate) async fn get_run(
    request: HttpRequest,
    id: Path<String>,
    backends: Data<Backends>,
) -> Result<HttpResponse, ApiError> {
    let run = owned_run(&backends, &id, &caller_name(&request)).await?;
    Ok(HttpResponse::Ok().json(RunView::from(run)))
}

/// Cancel a queued or running run: it stops at once (its model and tool calls are cancelled)
/// and nothing of it is stored. A request waiting for it is answered `409 run_cancelled`.
#[utoipa::path(
    post,
    path = "/runs/{id}/cancel",
    tag = "runs",
    params(("id" = String, Path, description = "The run id (`run_…`)")),
    responses(
        (status = 200, description = "Cancelled: the run, `status` `cancelled`", body = RunView),
        (status = 404, description = "No run of this caller has this id (`run_not_found`)", body = ErrorBody),
        (status = 409, description = "The run has already finished (`run_finished`; the message names its status)", body = ErrorBody),
        (status = 500, description = "A failure of the server's own (`internal_error`)", body = ErrorBody),
        (status = 503, description = "Storage unavailable (`storage_unavailable`)", body = ErrorBody),
    )
)]
pub(crate) async fn cancel_run(
    request: HttpRequest,
    id: Path<String>,
    backends: Data<Backends>,
    turns: Data<Turns>,
) -> Result<HttpResponse, ApiError> {
    let caller = caller_name(&request);
    // Owned first: another caller's run is not found, whatever its state.
    owned_run(&backends, &id, &caller).await?;
    match backends.runs.end_run(&id, CANCELLED).await? {
        Ended::Now(run) => {
            // Stops it here if this replica executes it; elsewhere its store finds it ended.
            turns.registry().cancel(&run.id);
            Ok(HttpResponse::Ok().json(RunView::from(run)))
        }
        Ended::Already(run) => Err(ApiError::Conflict {
            code: ErrorCode::RunFinished,
            message: format!("run {} has already finished: it is {}", run.id, run.status),
        }),
        Ended::Missing => Err(run_not_found(&id)),
    }
}

/// A session's runs, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/sessions/{id}/runs",
    tag = "runs",
    params(("id" = String, Path, description = "The session id"), RunListQuery),
    responses(
        (status = 200, body = RunList),
        (status = 404, description = "No such session of this caller, and no run of it (`session_not_found`)", body = ErrorBody),
        (status = 422, description = "Invalid id or query (`invalid_request`)", body = ErrorBody),
        (status = 500, description = "A failure of the server's own (`internal_error`)", body = ErrorBody),
        (status = 503, description = "Storage unavailable (`storage_unavailable`)", body = ErrorBody),
    )
)]
pub(crate) async fn list_session_runs(
    request: HttpRequest,
    id: Path<String>,
    query: Query<RunListQuery>,
    backends: Data<Backends>,
) -> Result<HttpResponse, ApiError> {
    let session = session_id(&id, &caller_name(&request))?;
    let limit = limit_within(query.limit, 20, 100)?;
    let after = query.cursor.as_deref().map(parse_run_cursor).transpose()?;
    // One more than asked says whether there is a next page.
    let mut runs = backends
        .runs
        .session_runs(&session, after.as_ref(), limit + 1)
        .await?;
    if runs.is_empty() {
        // A session with no run (made before runs) still lists; one that does not exist is 404.
        if backends.conversations.session(&session).await?.is_none() {
            return Err(ApiError::SessionNotFound(session.local().to_owned()));
        }
    }
    let more = runs.len() > limit;
    runs.truncate(limit);
    let next_cursor = more.then(|| runs.last().map(run_cursor_text)).flatten();
    Ok(HttpResponse::Ok().json(RunList {
        runs: runs.into_iter().map(RunView::from).collect(),
        next_cursor,
    }))
}

/// The run `id` if `caller` owns it, else `404 run_not_found`.
async fn owned_run(backends: &Backends, id: &str, caller: &str) -> Result<RunRecord, ApiError> {
    if !is_run_id(id) {
        return Err(run_not_found(id));
    }
    match backends.runs.run(id).await? {
        Some(run) if run.owner == caller => Ok(run),
        _ => Err(run_not_found(id)),
    }
}

fn run_not_found(id: &str) -> ApiError {
    ApiError::invalid(
        actix_web::http::StatusCode::NOT_FOUND,
        ErrorCode::RunNotFound,
        format!("no run {id} of yours exists"),
    )
}
