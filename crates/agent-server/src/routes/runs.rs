//! `GET /runs/{id}`, `POST /runs/{id}/cancel` and `GET /sessions/{id}/runs`: a caller's runs.
//! Another caller's run does not exist for you (404, as for an id nobody used).

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::web::{Bytes, Data, Path, Query};
use actix_web::{HttpRequest, HttpResponse};
use agent_config::Settings;
use agent_storage::{Ended, RunRecord};
use futures_util::StreamExt;
use serde::Deserialize;

use crate::access::caller_name;
use crate::backends::Backends;
use crate::dto::RunEvent;
use crate::dto::runs::{RunList, RunView, is_run_id, parse_run_cursor, run_cursor_text};
use crate::dto::session_id;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::routes::agent::AgentEvents;
use crate::routes::pipeline::TurnRoutes;
use crate::routes::sessions::limit_within;
use crate::routes::turn_stream::{EventFormat, Render, stream_response};
use crate::runs::CANCELLED;
use crate::runs::live::CancelReason;
use crate::runs::reader::{self, Numbered};
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
    turns: Data<Turns>,
) -> Result<HttpResponse, ApiError> {
    let run = owned_run(&backends, &turns, &id, &caller_name(&request)).await?;
    let agent = agent_of(&backends, run.session.as_ref()).await?;
    Ok(HttpResponse::Ok().json(RunView::from(run).with_agent(agent)))
}

/// The agent of `session` (a run's is its session's); none without a session or a turn yet.
async fn agent_of(
    backends: &Backends,
    session: Option<&agent_core::SessionId>,
) -> Result<Option<String>, ApiError> {
    let Some(session) = session else {
        return Ok(None);
    };
    Ok(backends
        .conversations
        .session(session)
        .await?
        .and_then(|info| info.agent))
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
    owned_run(&backends, &turns, &id, &caller).await?;
    match cancel(&backends, &turns, &id).await? {
        Ended::Now(run) => Ok(HttpResponse::Ok().json(RunView::from(run))),
        Ended::Already(run) => Err(ApiError::Conflict {
            code: ErrorCode::RunFinished,
            message: format!("run {} has already finished: it is {}", run.id, run.status),
        }),
        Ended::Missing => Err(run_not_found(&id)),
    }
}

/// Cancels the run `id` if it is active: in the store, and here at once if this replica runs
/// it (elsewhere, its runner learns at its next lease renewal, and its store finds it ended).
/// A run here with no record yet is recorded cancelled.
pub(crate) async fn cancel(
    backends: &Backends,
    turns: &Turns,
    id: &str,
) -> Result<Ended, ApiError> {
    let ended = match turns.registry().live(id) {
        Some(live) => live.end_in(backends.runs.as_ref(), CANCELLED).await?,
        None => backends.runs.end_run(id, CANCELLED).await?,
    };
    if let Ended::Now(run) = &ended {
        turns.registry().cancel(&run.id, CancelReason::Requested);
    }
    Ok(ended)
}

/// A run's events as server-sent events, in `/agent/stream`'s format: from the start (`run`,
/// then its steps, then `done` or `error`), or after the event whose id `Last-Event-ID` names;
/// live until the run ends, on any replica.
#[utoipa::path(
    get,
    path = "/runs/{id}/events",
    tag = "runs",
    params(
        ("id" = String, Path, description = "The run id (`run_…`)"),
        ("Last-Event-ID" = Option<u64>, Header, nullable = false, description = "Resume after this event (the `id:` of the last event received)"),
    ),
    responses(
        (status = 200, description = "`text/event-stream` of the run's events, as `POST /agent/stream` sends them (see its `x-sse-events`)", content_type = "text/event-stream"),
        (status = 404, description = "No run of this caller has this id (`run_not_found`)", body = ErrorBody),
        (status = 410, description = "The run ended longer ago than its events are kept (`run_events_expired`; its record stays at `GET /runs/{id}`)", body = ErrorBody),
        (status = 422, description = "`Last-Event-ID` is not an event number (`invalid_request`)", body = ErrorBody),
        (status = 500, description = "A failure of the server's own (`internal_error`)", body = ErrorBody),
        (status = 503, description = "Storage unavailable (`storage_unavailable`)", body = ErrorBody),
    )
)]
pub(crate) async fn run_events(
    request: HttpRequest,
    id: Path<String>,
    routes: Data<TurnRoutes>,
) -> Result<HttpResponse, ApiError> {
    let backends = &routes.backends;
    let run = owned_run(backends, &routes.turns, &id, &caller_name(&request)).await?;
    let after = match request.headers().get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::invalid_param(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        ErrorCode::InvalidRequest,
                        "Last-Event-ID",
                        "Last-Event-ID: not the id of an event of this run",
                    )
                })?,
        ),
    };
    check_events_kept(&run, &routes.settings)?;
    Ok(stream_run(&routes, run, after, AgentEvents::default()))
}

/// `410 run_events_expired` once the events of `run` are no longer kept.
pub(crate) fn check_events_kept(run: &RunRecord, settings: &Settings) -> Result<(), ApiError> {
    if reader::expired(run, settings.runs.event_retention) {
        return Err(ApiError::invalid(
            StatusCode::GONE,
            ErrorCode::RunEventsExpired,
            format!(
                "the events of run {} are no longer kept (it ended more than {} ago)",
                run.id,
                humantime::format_duration(settings.runs.event_retention)
            ),
        ));
    }
    Ok(())
}

/// The events of `run` after its event `after` (from its start when None) in `format`, live
/// until it ends, read from this process if it runs it, else from the shared event log.
pub(crate) fn stream_run<F: EventFormat>(
    routes: &TurnRoutes,
    run: RunRecord,
    after: Option<u64>,
    format: F,
) -> HttpResponse {
    let backends = &routes.backends;
    let live = routes.turns.registry().live(&run.id);
    let start = RunEvent {
        run_id: run.id.clone(),
        session_id: run
            .session
            .as_ref()
            .map(|session| session.local().to_owned()),
    };
    let events = reader::events(
        run,
        live,
        Arc::clone(&backends.events),
        Arc::clone(&backends.runs),
        after,
    );
    let keepalive = routes.settings.api.sse_keepalive;
    let mut drain = routes.drain.clone();
    let mut render = Render::new(format, Arc::clone(&routes.failures));
    let body = async_stream::stream! {
        if after.is_none()
            && let Some(start) = render.format.start(&start)
        {
            yield Ok::<_, actix_web::Error>(start);
        }
        let mut events = std::pin::pin!(events);
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
        loop {
            tokio::select! {
                next = events.next() => {
                    let Some(Numbered { seq, event }) = next else { break };
                    render.format.at_run_event(seq);
                    let (bytes, ended) = render.event(event);
                    for bytes in bytes {
                        yield Ok(bytes);
                    }
                    if ended {
                        break;
                    }
                }
                _ = ticker.tick() => yield Ok(Bytes::from_static(b": keep-alive\n\n")),
                changed = drain.changed() => {
                    if changed.is_ok() && *drain.borrow() {
                        // Only this reader stops: the run goes on (and can be read elsewhere).
                        break;
                    }
                }
            }
        }
    };
    stream_response(body)
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
    turns: Data<Turns>,
) -> Result<HttpResponse, ApiError> {
    let session = session_id(&id, &caller_name(&request))?;
    let limit = limit_within(query.limit, 20, 100)?;
    let after = query.cursor.as_deref().map(parse_run_cursor).transpose()?;
    // The newest: one running here with no record yet.
    let running = turns
        .registry()
        .live_on(&session)
        .filter(|live| after.is_none() && !live.is_recorded())
        .map(|live| live.record());
    // One more than asked says whether there is a next page.
    let mut runs = backends
        .runs
        .session_runs(&session, after.as_ref(), limit + 1)
        .await?;
    if let Some(running) = running
        && !runs.iter().any(|run| run.id == running.id)
    {
        runs.insert(0, running);
    }
    let info = backends.conversations.session(&session).await?;
    // A session with no run (made before runs) still lists; one that does not exist is 404.
    if runs.is_empty() && info.is_none() {
        return Err(ApiError::SessionNotFound(session.local().to_owned()));
    }
    let agent = info.and_then(|info| info.agent);
    let more = runs.len() > limit;
    runs.truncate(limit);
    let next_cursor = more.then(|| runs.last().map(run_cursor_text)).flatten();
    Ok(HttpResponse::Ok().json(RunList {
        runs: runs
            .into_iter()
            .map(|run| RunView::from(run).with_agent(agent.clone()))
            .collect(),
        next_cursor,
    }))
}

/// The run `id` if `caller` owns it, else `404 run_not_found`. One running here with no record
/// yet is answered as it is now (elsewhere, it is not found until it has one).
pub(crate) async fn owned_run(
    backends: &Backends,
    turns: &Turns,
    id: &str,
    caller: &str,
) -> Result<RunRecord, ApiError> {
    if !is_run_id(id) {
        return Err(run_not_found(id));
    }
    // Asked here first: a run that ends meanwhile is recorded before it leaves the registry.
    if let Some(live) = turns.registry().live(id)
        && !live.is_recorded()
    {
        return match live.owner == caller {
            true => Ok(live.record()),
            false => Err(run_not_found(id)),
        };
    }
    match backends.runs.run(id).await? {
        Some(run) if run.owner == caller => Ok(run),
        _ => Err(run_not_found(id)),
    }
}

pub(crate) fn run_not_found(id: &str) -> ApiError {
    ApiError::invalid(
        StatusCode::NOT_FOUND,
        ErrorCode::RunNotFound,
        format!("no run {id} of yours exists"),
    )
}
