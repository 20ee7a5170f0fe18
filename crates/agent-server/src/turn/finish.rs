//! How a turn ends: stored (its run completed by the same statement), failed, or stopped.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agent_core::{TokenCounter, TurnResult};
use agent_storage::{
    IdempotencyCompletion, ResponseParameters, ResponseRecord, RunCompletion, RunEnd, RunOrigin,
    StorageError, SummaryRecord, TurnRecord,
};
use tracing::Instrument;

use super::{Finished, Held, HeldSession, Render, Turns, observe, unix_now};
use crate::agents::ServedAgent;
use crate::error::{ApiError, ErrorCode};
use crate::metrics::{TurnCost, TurnOutcome};
use crate::runs::live::{CancelReason, Recording};
use crate::runs::queue::QueuedResponse;
use crate::runs::waiting::Pending;
use crate::runs::{DISCONNECTED, RunTicket, SHUTDOWN};

impl Turns {
    /// Stores a finished turn and releases the lock (for a given conversation: counts its
    /// usage). The store runs in its own task, so a client going away cannot interrupt it
    /// half-way (it is one transaction either way). With a claim in `extras`, the idempotency
    /// claim is completed with the response in the same transaction where the store can
    /// (answered true), so a crash cannot leave a stored turn behind a claim that a retry would
    /// run again; a response to keep is recorded by the same statement.
    pub(crate) async fn store(
        &self,
        held: HeldSession,
        agent: &ServedAgent,
        result: TurnResult,
        extras: Extras,
    ) -> Result<(Finished, bool), ApiError> {
        let HeldSession {
            target,
            started,
            slot,
            earlier,
            mut run,
            resumable: _,
        } = held;
        let conversations = Arc::clone(&self.backends.conversations);
        let store_failing = Arc::clone(&self.store_failing);
        let history_cache = self.history_cache.clone();
        let cost = TurnCost::of(&result, started);
        let context = crate::dto::ContextUse::of(&result);
        let TurnResult {
            mut turn,
            response,
            waiting,
            model,
            compaction,
            ..
        } = result;
        let compaction = compaction.and_then(Result::ok);
        // The messages the client sent before its new one are stored with the turn: counted
        // (by the agent's tokenizer) when the turn's messages were.
        let earlier_counted = (!earlier.is_empty() && !turn.context_tokens.is_empty()).then(|| {
            let counter = TokenCounter::for_model(&agent.agent.model().identity().model);
            earlier
                .iter()
                .map(|message| counter.message(message))
                .collect::<Vec<_>>()
        });
        // A turn whose run does not wait answers with the calls it ended with (and completes).
        let waiting = self.pending_calls(&waiting);
        let created = unix_now();
        let caller = match &target {
            Held::Session { session, .. } => session.owner().to_owned(),
            Held::Given { caller } => caller.clone(),
        };
        let finished = Finished {
            id: uuid::Uuid::new_v4(),
            created,
            text: response,
            session: match &target {
                Held::Session { session, .. } => Some(session.local().to_owned()),
                Held::Given { .. } => None,
            },
            usage: turn.usage,
            agent: Some(agent.id.clone()),
            model,
            run_id: run.id().to_owned(),
            waiting,
            context,
        };
        // Made here: the spawned task is outside the request's span (and carries a sampled
        // request's subscriber along).
        let store_span = tracing::debug_span!(
            "session.store",
            messages = agent_core::spans::count(turn.messages.len())
        );
        let store = async move {
            // Held while the turn is stored, so that nothing else records the run meanwhile:
            // the statement records it completed if it had no record.
            let live = Arc::clone(run.live());
            let recording = live.recording().await;
            let completion = RunCompletion {
                id: &finished.run_id,
                output_text: &finished.text,
                origin: (!recording.is_recorded()).then_some(RunOrigin {
                    owner: &live.owner,
                    started_at: live.started_at,
                }),
            };
            let (session, info, guard, window, history_start) = match target {
                Held::Given { caller } => {
                    let counted = conversations
                        .count_usage(
                            &caller,
                            finished.agent.as_deref(),
                            turn.usage,
                            Some(completion),
                        )
                        .await;
                    let counted = observe(&store_failing, counted).map(|()| false);
                    recorded(recording, counted.is_ok());
                    settle(&mut run, counted.as_ref().err()).await;
                    drop(slot);
                    return Ok((finished.clone(), counted?));
                }
                Held::Session {
                    session,
                    info,
                    guard,
                    window,
                    history_start,
                } => (session, info, guard, window, history_start),
            };
            if !earlier.is_empty() {
                turn.messages.splice(0..0, earlier);
                if let Some(counts) = earlier_counted {
                    turn.context_tokens.splice(0..0, counts);
                }
            }
            // A compaction covers stored messages from the first one the turn was sent.
            let summary = compaction.as_ref().map(|compaction| SummaryRecord {
                text: &compaction.summary,
                through: history_start + compaction.covered as u64,
            });
            let render = |render: &Render| {
                render(&finished).map_err(|error| ApiError::Internal(error.into()))
            };
            let replay = extras
                .claim
                .as_ref()
                .map(|claim| render(&claim.render))
                .transpose()?;
            let record =
                TurnRecord {
                    idempotency: extras.claim.as_ref().zip(replay.as_deref()).map(
                        |(claim, replay)| IdempotencyCompletion {
                            key: &claim.key,
                            response: replay,
                            retention: claim.retention,
                        },
                    ),
                    response: extras.response.as_ref().map(|kept| ResponseRecord {
                        id: &kept.id,
                        created_at: SystemTime::UNIX_EPOCH
                            + Duration::from_secs(kept.created_at),
                        parameters: &kept.parameters,
                        output_text: &finished.text,
                    }),
                    run: Some(completion),
                    agent: finished.agent.as_deref(),
                    summary,
                };
            let stored = conversations
                .append_turn_recording(&session, info.next_sequence, &turn, record)
                .await;
            // Kept before the lock is released: the next turn on this session finds it.
            match (&stored, window, &guard) {
                (Ok((info, _)), Some(window), Some(guard)) => {
                    let fence = guard.fencing_token();
                    history_cache.store(&session, fence, info.clone(), &window, turn);
                }
                (Ok(_), _, _) => {}
                (Err(_), _, _) => history_cache.forget(&session),
            }
            let stored = observe(&store_failing, stored.map(|(_, completed)| completed));
            recorded(recording, stored.is_ok());
            settle(&mut run, stored.as_ref().err()).await;
            if let Some(guard) = guard
                && let Err(error) = guard.release().await
            {
                tracing::warn!(%error, "releasing the session lock failed; retrying in the background until its TTL");
            }
            drop(slot);
            Ok::<_, ApiError>((finished.clone(), stored?))
        }
        .instrument(store_span);
        let stored = tokio::spawn(crate::telemetry::carry(store));
        let stored = stored
            .await
            .map_err(|error| ApiError::Internal(anyhow::Error::new(error)))
            .and_then(|stored| stored);
        // Completed only once stored: a turn whose store failed answered nothing.
        let outcome = match stored {
            Ok(_) => TurnOutcome::Completed,
            Err(_) => TurnOutcome::StoreFailed,
        };
        self.metrics.finished(&agent.id, &caller, outcome, &cost);
        stored
    }

    /// Stops the run of a turn that waits for the client (`result.waiting`): its state is written
    /// to its run (recorded now if it had no record), the session's lock and the turn's slot are
    /// released, and nothing of the turn is stored until an answer resumes it (on any replica).
    /// Answers what the run asks for. A turn that cannot wait never gets here (its calls needing
    /// approval are rejected at once).
    pub(crate) async fn suspend(
        &self,
        held: HeldSession,
        agent: &ServedAgent,
        result: TurnResult,
        extras: Extras,
    ) -> Result<(Finished, bool), ApiError> {
        let HeldSession {
            target,
            started,
            slot,
            earlier: _,
            mut run,
            resumable,
        } = held;
        let cost = TurnCost::of(&result, started);
        let (session, info, guard, kept) = match (target, resumable) {
            (
                Held::Session {
                    session,
                    info,
                    guard,
                    ..
                },
                Some(kept),
            ) => (session, info, guard, kept),
            _ => {
                let error =
                    ApiError::Internal(anyhow::anyhow!("a turn that cannot wait stopped to wait"));
                run.fail(&error).await;
                return Err(error);
            }
        };
        let mut turn = *kept;
        turn.response = extras.response.as_ref().map(QueuedResponse::from);
        let pending = Pending {
            turn,
            next_sequence: info.next_sequence,
            produced: result.turn.messages,
            usage: result.turn.usage,
            steps: result.steps,
            calls: self.pending_calls(&result.waiting),
        };
        let waiting = pending.calls.clone();
        let text =
            serde_json::to_string(&pending).map_err(|error| ApiError::Internal(error.into()))?;
        let live = Arc::clone(run.live());
        let expires_at = SystemTime::now() + self.action_timeout();
        let suspended = {
            let recording = live.recording().await;
            let new_run = live.new_run(self.registry.holder(), self.run_lease);
            let suspended = self
                .backends
                .runs
                .suspend_run(new_run, &text, expires_at)
                .await;
            recorded(recording, suspended.is_ok());
            observe(&self.store_failing, suspended)
        };
        let outcome = match suspended {
            Ok(_) => {
                run.close();
                Ok((
                    Finished {
                        id: uuid::Uuid::new_v4(),
                        created: unix_now(),
                        text: result.response,
                        session: Some(session.local().to_owned()),
                        usage: pending.usage,
                        agent: Some(agent.id.clone()),
                        model: result.model,
                        run_id: live.id.clone(),
                        waiting,
                        context: None,
                    },
                    false,
                ))
            }
            // Cancelled (or lost) meanwhile: the canceller ended it.
            Err(StorageError::RunEnded { .. }) => {
                run.close();
                Err(run_cancelled(&live.id))
            }
            Err(error) => {
                let error = ApiError::from(error);
                run.fail(&error).await;
                Err(error)
            }
        };
        if let Some(guard) = guard
            && let Err(error) = guard.release().await
        {
            tracing::warn!(%error, "releasing the session lock failed; retrying in the background until its TTL");
        }
        drop(slot);
        let counted = match &outcome {
            Ok(_) => TurnOutcome::RequiresAction,
            Err(_) => TurnOutcome::StoreFailed,
        };
        self.metrics
            .finished(&agent.id, session.owner(), counted, &cost);
        outcome
    }

    /// Counts a turn the agent could not finish, and fails its run; answers the API's error.
    pub(crate) async fn fail(
        &self,
        mut held: HeldSession,
        agent: &ServedAgent,
        error: agent_core::AgentError,
    ) -> ApiError {
        self.metrics
            .failed(&agent.id, held.caller(), outcome(&error));
        let error = ApiError::from(error);
        held.run.fail(&error).await;
        error
    }

    /// Ends the run of a turn that was stopped (cancelled, or its executor's turn ended without
    /// an outcome); answers the error its requester gets.
    pub(crate) async fn stopped(&self, mut held: HeldSession) -> ApiError {
        let run = Arc::clone(held.run.live());
        match run.cancel_reason() {
            Some(CancelReason::Requested) => {
                // The canceller ended the run in the store.
                held.run.close();
                run_cancelled(&run.id)
            }
            Some(CancelReason::Disconnected) => {
                held.run.end(DISCONNECTED).await;
                run_cancelled(&run.id)
            }
            Some(CancelReason::Shutdown) => {
                held.run.end(SHUTDOWN).await;
                ApiError::Unavailable {
                    code: ErrorCode::Shutdown,
                    message: crate::routes::turn_stream::SHUTDOWN_MESSAGE.to_owned(),
                    retry_after: Some(Duration::from_secs(1)),
                    cause: None,
                }
            }
            None => {
                let error = ApiError::Internal(anyhow::anyhow!(
                    "the turn's events ended without an outcome"
                ));
                held.run.fail(&error).await;
                error
            }
        }
    }
}

/// What a turn's store writes besides the turn (of a stored session; a given conversation's
/// turn stores nothing).
#[derive(Debug, Clone, Default)]
pub(crate) struct Extras {
    pub(crate) claim: Option<ClaimToComplete>,
    pub(crate) response: Option<KeepResponse>,
}

/// A response (the Responses API) to keep with the turn: its id, when it was made (seconds since
/// the Unix epoch), and what its request asked; its answer and usage are the turn's.
#[derive(Debug, Clone)]
pub(crate) struct KeepResponse {
    pub(crate) id: String,
    pub(crate) created_at: u64,
    pub(crate) parameters: Arc<ResponseParameters>,
}

/// An idempotency claim the turn's store should complete: the claimed key, how long its
/// response is kept, and how the route renders its response (see [`render_as`]).
#[derive(Clone)]
pub(crate) struct ClaimToComplete {
    pub(crate) key: String,
    pub(crate) retention: Duration,
    pub(crate) render: Render,
}

impl std::fmt::Debug for ClaimToComplete {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ClaimToComplete")
            .field("key", &self.key)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

/// The error of a request whose run was cancelled while it ran.
fn run_cancelled(run: &str) -> ApiError {
    ApiError::Conflict {
        code: ErrorCode::RunCancelled,
        message: format!("run {run} was cancelled; nothing was stored"),
    }
}

/// Lets go of the run's recording once its turn's store answered; `stored`: the store has the
/// run's record now (completed).
fn recorded(recording: Recording<'_>, stored: bool) {
    if stored {
        recording.mark();
    }
}

/// Ends the run of a turn whose store answered: completed with it (or ended meanwhile by a
/// cancel or as lost), else failed with the store's error.
async fn settle(run: &mut RunTicket, failure: Option<&StorageError>) {
    match failure {
        None | Some(StorageError::RunEnded { .. }) => run.close(),
        Some(error) => {
            let message = error.to_string();
            let end = RunEnd::Failed {
                code: if error.is_unavailable() {
                    "storage_unavailable"
                } else {
                    "store_failed"
                },
                message: &message,
            };
            run.end(end).await;
        }
    }
}

/// The metric outcome of a turn the agent could not finish.
fn outcome(error: &agent_core::AgentError) -> TurnOutcome {
    match error {
        agent_core::AgentError::Model(_) => TurnOutcome::ModelError,
        agent_core::AgentError::StepLimit(_) => TurnOutcome::StepLimit,
        agent_core::AgentError::TurnBudgetExceeded { .. } => TurnOutcome::TurnBudget,
        agent_core::AgentError::SessionBudgetExceeded { .. } => TurnOutcome::SessionBudget,
        agent_core::AgentError::DeadlineExceeded(_) => TurnOutcome::Deadline,
        agent_core::AgentError::ContextLengthExceeded { .. } => TurnOutcome::ContextLength,
    }
}
