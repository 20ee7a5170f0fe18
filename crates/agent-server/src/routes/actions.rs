//! `POST /runs/{id}/actions`: the client's answer to a run waiting for it (`requires_action`):
//! approvals or rejections of its calls to the agent's tools, outputs of its calls to the
//! client's own tools. Each answer is written over the state it was read from, so of two answers
//! sent at once (to two replicas) one is taken and the other is `409`; once every call is
//! answered the run goes on here, on whichever replica took the answer, and answers as a turn
//! does: blocking, streamed, or in the background.

use actix_web::http::StatusCode;
use actix_web::web::{Bytes, Data, Path};
use actix_web::{HttpRequest, HttpResponse};
use agent_storage::{Answered, RunAnswer, RunRecord, RunStatus};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::access::caller_name;
use crate::dto::runs::RunView;
use crate::dto::{AgentAnswer, RequiresActionResponse, WaitingStatus, parse_json};
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::routes::agent::AgentEvents;
use crate::routes::pipeline::TurnRoutes;
use crate::routes::runs::{owned_run, run_not_found};
use crate::routes::turn_stream;
use crate::runs::executor::{Mode, execute};
use crate::runs::waiting::{Pending, PendingAnswer, WaitKind};
use crate::turn::{Conversation, Extras, KeepResponse, TurnInput, WaitMode};

/// The answers to a waiting run's calls, by `tool_call_id`: any of them at a time (the run goes
/// on once every call is answered).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunActions {
    /// Approvals or rejections of the calls of an `approve_tool_calls` action.
    #[serde(default)]
    pub(crate) approvals: Vec<ToolApproval>,
    /// The outputs of the calls of a `submit_tool_outputs` action.
    #[serde(default)]
    pub(crate) tool_outputs: Vec<ToolOutput>,
    /// Answer with server-sent events, as `POST /agent/stream` does.
    #[serde(default)]
    pub(crate) stream: bool,
    /// The run goes on apart from the request: answered `202` at once with the run (follow
    /// `GET /runs/{id}`), or, with `stream`, streamed with going away cancelling nothing.
    #[serde(default)]
    pub(crate) background: bool,
}

/// One call approved (it runs) or rejected (the model reads `rejected by the user: <reason>`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ToolApproval {
    pub(crate) tool_call_id: String,
    pub(crate) approve: bool,
    /// Why (a rejection's reason is what the model reads); at most 4096 characters.
    #[serde(default)]
    pub(crate) reason: Option<String>,
}

/// The result of one of the client's tools: the tool message the model reads.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ToolOutput {
    pub(crate) tool_call_id: String,
    pub(crate) output: String,
}

/// The longest rejection reason.
const MAX_REASON_CHARS: usize = 4096;

/// Answer a run that waits for its client.
#[utoipa::path(
    post,
    path = "/runs/{id}/actions",
    tag = "runs",
    params(("id" = String, Path, description = "The run id (`run_…`)")),
    request_body = RunActions,
    responses(
        (status = 200, description = "Every call answered: the run went on, and this is its turn's answer as `POST /agent` gives it (`AgentResponse`, or `RequiresActionResponse` if it stopped again); some calls still unanswered: the run waits on for them (`RequiresActionResponse`). With `stream` (and every call answered), `text/event-stream` as `POST /agent/stream` sends it", body = AgentAnswer),
        (status = 202, description = "With `background`: the run goes on apart from the request", body = RunView,
            headers(("Location" = String, description = "`/runs/{id}`"))),
        (status = 400, description = "Malformed JSON (`malformed_json`)", body = ErrorBody),
        (status = 404, description = "No run of this caller has this id (`run_not_found`)", body = ErrorBody),
        (status = 409, description = "The run is not waiting for an answer (`run_not_waiting`: it never did, it was answered meanwhile, cancelled or expired), or the run was cancelled while it went on (`run_cancelled`)", body = ErrorBody),
        (status = 413, description = "Body too large (`payload_too_large`)", body = ErrorBody),
        (status = 415, description = "Not sent as JSON (`unsupported_media_type`)", body = ErrorBody),
        (status = 422, description = "No answer, or one naming no call of the run, a call already answered, or a call of the other kind (`invalid_request`, naming the field)", body = ErrorBody),
        (status = 500, description = "A failure of the server's own (`internal_error`)", body = ErrorBody),
        (status = 502, description = "The model server failed", body = ErrorBody),
        (status = 503, description = "Storage unavailable, or no room for a turn (`overloaded`); see Retry-After", body = ErrorBody),
        (status = 504, description = "The model or the turn timed out", body = ErrorBody),
    )
)]
pub(crate) async fn post_run_actions(
    request: HttpRequest,
    id: Path<String>,
    body: Bytes,
    routes: Data<TurnRoutes>,
) -> Result<HttpResponse, ApiError> {
    let actions: RunActions = parse_json(&request, &body)?;
    if actions.stream && !routes.settings.enable_streaming {
        return Err(ApiError::invalid(
            StatusCode::NOT_FOUND,
            ErrorCode::StreamingDisabled,
            "streaming is turned off on this server (ENABLE_STREAMING=false); answer without stream",
        ));
    }
    let caller = caller_name(&request);
    let run = owned_run(&routes.backends, &routes.turns, &id, &caller).await?;
    let Some(action) = run
        .action
        .clone()
        .filter(|_| run.status == RunStatus::RequiresAction)
    else {
        return Err(not_waiting(&run));
    };
    let mut pending: Pending = serde_json::from_str(&action.pending).map_err(|error| {
        ApiError::Internal(anyhow::anyhow!("run {id}'s pending state: {error}"))
    })?;
    answer(&mut pending, &actions)?;
    let text = serde_json::to_string(&pending).map_err(|error| ApiError::Internal(error.into()))?;
    let runs = &routes.backends.runs;
    let mut written = RunAnswer {
        id: &run.id,
        version: action.version,
        pending: &text,
        resume: None,
    };
    if !pending.is_answered() {
        let answered = runs.answer_run(written).await?;
        taken(answered, &run.id)?;
        let waiting = pending
            .required_action()
            .map(|action| RequiresActionResponse {
                status: WaitingStatus::RequiresAction,
                run_id: run.id.clone(),
                session_id: session_of(&run),
                required_action: action,
            });
        return Ok(HttpResponse::Ok().json(waiting));
    }
    // Every call answered: the run goes on here, with its agent. Room for it first, before the
    // answer is taken.
    let turns = &routes.turns;
    let agent = turns
        .agents
        .of_run(pending.turn.agent.as_deref())
        .map_err(|problem| ApiError::Conflict {
            code: ErrorCode::RunNotWaiting,
            message: problem,
        })?;
    let slot = turns.admit()?;
    let Some(session) = run.session.clone() else {
        return Err(ApiError::Internal(anyhow::anyhow!(
            "run {id} waits without a session"
        )));
    };
    let holder = turns.registry().holder().to_owned();
    written.resume = Some((&holder, turns.run_lease()));
    taken(runs.answer_run(written).await?, &run.id)?;
    let ticket = turns.ticket(run.id.clone(), &run.owner, Some(&session), true);
    let resume = pending.resume();
    let Pending {
        turn,
        next_sequence,
        ..
    } = pending;
    let input = TurnInput {
        agent,
        // The agent its first half ran on (the session's).
        agent_named: true,
        conversation: Conversation::Session {
            session,
            new_session: false,
            continues_from: Some(next_sequence),
        },
        message: turn.message,
        sampling: turn.sampling,
        instructions: turn.instructions,
        earlier: turn.earlier,
        wait_mode: WaitMode::Suspend,
        resume: Some(resume),
        client_tools: turn.client_tools.into_iter().map(Into::into).collect(),
        context: Default::default(),
    };
    let extras = Extras {
        claim: None,
        response: turn.response.map(KeepResponse::from),
    };
    let prepared = turns.prepare_claimed(input, slot, ticket).await?;
    if actions.stream {
        let mut execution = execute(turns, prepared, extras, Mode::Streaming);
        if actions.background {
            execution = execution.detached();
        }
        return Ok(turn_stream::respond(
            &routes,
            execution,
            AgentEvents::default(),
        ));
    }
    let execution = execute(turns, prepared, extras, Mode::Blocking);
    if actions.background {
        let live = execution.live.record();
        execution.detach();
        return Ok(HttpResponse::Accepted()
            .insert_header((
                actix_web::http::header::LOCATION,
                format!("/runs/{}", run.id),
            ))
            .json(RunView::from(RunRecord {
                background: true,
                ..live
            })));
    }
    let (finished, _) = execution.outcome().await?;
    Ok(HttpResponse::Ok().json(AgentAnswer::from(&finished)))
}

/// Writes `actions` into `pending`, or the first refusal.
fn answer(pending: &mut Pending, actions: &RunActions) -> Result<(), ApiError> {
    if actions.approvals.is_empty() && actions.tool_outputs.is_empty() {
        return Err(unprocessable(
            "approvals",
            "send at least one answer: approvals or tool_outputs",
        ));
    }
    let approvals = actions
        .approvals
        .iter()
        .enumerate()
        .map(|(index, approval)| {
            let answer = if approval.approve {
                PendingAnswer::Approved
            } else {
                PendingAnswer::Rejected {
                    reason: approval.reason.clone(),
                }
            };
            (
                format!("approvals[{index}]"),
                &approval.tool_call_id,
                WaitKind::Approval,
                answer,
                approval.reason.as_deref(),
            )
        });
    let outputs = actions
        .tool_outputs
        .iter()
        .enumerate()
        .map(|(index, output)| {
            let answer = PendingAnswer::Output {
                output: output.output.clone(),
            };
            (
                format!("tool_outputs[{index}]"),
                &output.tool_call_id,
                WaitKind::ClientTool,
                answer,
                None,
            )
        });
    for (field, id, kind, answer, reason) in approvals.chain(outputs) {
        if reason.is_some_and(|reason| reason.chars().count() > MAX_REASON_CHARS) {
            return Err(unprocessable(
                &format!("{field}.reason"),
                &format!("{field}.reason is longer than {MAX_REASON_CHARS} characters"),
            ));
        }
        let field = format!("{field}.tool_call_id");
        let Some(call) = pending.calls.iter_mut().find(|call| call.call.id == *id) else {
            return Err(unprocessable(
                &field,
                &format!("{field}: the run waits for no call {id}"),
            ));
        };
        if call.answer.is_some() {
            return Err(unprocessable(
                &field,
                &format!("{field}: call {id} is already answered"),
            ));
        }
        if call.wait != kind {
            let wanted = match call.wait {
                WaitKind::Approval => "an approval (send it in approvals)",
                WaitKind::ClientTool => "its output (send it in tool_outputs)",
            };
            return Err(unprocessable(
                &field,
                &format!("{field}: call {id} waits for {wanted}"),
            ));
        }
        call.answer = Some(answer);
    }
    Ok(())
}

/// Refuses an answer the store did not take (the run moved on since it was read).
fn taken(answered: Answered, id: &str) -> Result<(), ApiError> {
    match answered {
        Answered::Now(_) => Ok(()),
        Answered::Moved(run) => Err(not_waiting(&run)),
        Answered::Missing => Err(run_not_found(id)),
    }
}

fn not_waiting(run: &RunRecord) -> ApiError {
    let message = if run.status == RunStatus::RequiresAction {
        format!(
            "run {} was answered meanwhile: read it again (GET /runs/{})",
            run.id, run.id
        )
    } else {
        format!(
            "run {} is not waiting for an answer: it is {}",
            run.id, run.status
        )
    };
    ApiError::Conflict {
        code: ErrorCode::RunNotWaiting,
        message,
    }
}

fn session_of(run: &RunRecord) -> String {
    run.session
        .as_ref()
        .map(|session| session.local().to_owned())
        .unwrap_or_default()
}

fn unprocessable(field: &str, message: &str) -> ApiError {
    ApiError::invalid_param(
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::InvalidRequest,
        field,
        message,
    )
}
