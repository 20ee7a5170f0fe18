//! A turn as the API runs it: take the session lock (bounded wait), read the history window, run
//! the agent, store the whole turn atomically, release. A turn that fails stores nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_config::Settings;
use agent_core::{Agent, Role, TurnRequest, TurnResult};
use agent_storage::{IdempotencyCompletion, LockGuard, SessionInfo, acquire_lock};

use crate::backends::Backends;
use crate::dto::{AgentResponse, ValidTurn};
use crate::error::ApiError;

/// Runs turns; shared by `/agent` and `/agent/stream`. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Turns {
    pub(crate) agent: Agent,
    backends: Backends,
    history_window: usize,
    lock_wait: Duration,
    lock_ttl: Duration,
}

/// A session locked and read: the request for the agent, and the held session for `store`.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) request: TurnRequest,
    pub(crate) held: HeldSession,
}

/// The locked session a turn will be stored into.
#[derive(Debug)]
pub(crate) struct HeldSession {
    session: agent_core::SessionId,
    info: SessionInfo,
    guard: LockGuard,
    started: Instant,
}

impl Turns {
    pub(crate) fn new(agent: Agent, backends: Backends, settings: &Settings) -> Self {
        Self {
            agent,
            backends,
            history_window: settings.turn.history_window,
            lock_wait: settings.api.lock_wait,
            // The lock outlives the turn's deadline, so only a crashed holder lets it expire.
            lock_ttl: settings.turn.turn_deadline + Duration::from_secs(30),
        }
    }

    pub(crate) fn lock_wait(&self) -> Duration {
        self.lock_wait
    }

    /// Locks the session, creates it if new, and reads its history window.
    pub(crate) async fn prepare(&self, turn: ValidTurn) -> Result<Prepared, ApiError> {
        let started = Instant::now();
        let ValidTurn { session, message } = turn;
        let guard = acquire_lock(
            &self.backends.locks,
            &session,
            self.lock_ttl,
            self.lock_wait,
        )
        .await?;
        let (info, stored) = self
            .backends
            .conversations
            .open_session(&session, self.history_window)
            .await?;
        let mut history: Vec<_> = stored.into_iter().map(|stored| stored.message).collect();
        // A window may start inside an earlier turn; tool results without their call are invalid.
        let first_kept = history
            .iter()
            .position(|message| message.role != Role::Tool)
            .unwrap_or(history.len());
        history.drain(..first_kept);
        let request = TurnRequest {
            history,
            user_message: message,
            session_tokens_used: info.usage.total(),
        };
        Ok(Prepared {
            request,
            held: HeldSession {
                session,
                info,
                guard,
                started,
            },
        })
    }

    /// Stores a finished turn and releases the lock. The store runs in its own task, so a client
    /// going away cannot interrupt it half-way (it is one transaction either way). With `claim`,
    /// the idempotency claim is completed with the response in the same transaction where the
    /// store can (answered true), so a crash cannot leave a stored turn behind a claim that a
    /// retry would run again.
    pub(crate) async fn store(
        &self,
        held: HeldSession,
        result: TurnResult,
        claim: Option<ClaimToComplete>,
    ) -> Result<(AgentResponse, bool), ApiError> {
        let HeldSession {
            session,
            info,
            guard,
            started,
        } = held;
        let conversations = Arc::clone(&self.backends.conversations);
        let tokens_used = result.turn.usage.total();
        record_turn(&result, started);
        let TurnResult { turn, response, .. } = result;
        let response = AgentResponse {
            response,
            session_id: session.to_string(),
            tokens_used,
        };
        let stored = tokio::spawn(async move {
            let stored = match &claim {
                None => conversations
                    .append_turn(&session, info.next_sequence, &turn)
                    .await
                    .map(|_| false),
                Some(claim) => {
                    let replay = serde_json::to_string(&response)
                        .map_err(|error| ApiError::Internal(error.into()))?;
                    let completion = IdempotencyCompletion {
                        key: &claim.key,
                        response: &replay,
                        retention: claim.retention,
                    };
                    conversations
                        .append_turn_completing(&session, info.next_sequence, &turn, completion)
                        .await
                        .map(|(_, completed)| completed)
                }
            };
            if let Err(error) = guard.release().await {
                tracing::warn!(%error, "releasing the session lock failed; retrying in the background until its TTL");
            }
            Ok::<_, ApiError>((response, stored?))
        });
        stored
            .await
            .map_err(|error| ApiError::Internal(anyhow::Error::new(error)))?
    }

    /// The whole non-streaming turn; answers the response and whether `claim` was completed
    /// with it.
    pub(crate) async fn run(
        &self,
        turn: ValidTurn,
        claim: Option<ClaimToComplete>,
    ) -> Result<(AgentResponse, bool), ApiError> {
        let Prepared { request, held } = self.prepare(turn).await?;
        let result = self.agent.run_turn(request).await.inspect_err(|error| {
            metrics::counter!("agent_turns_total", "outcome" => outcome(error)).increment(1);
        })?;
        self.store(held, result, claim).await
    }
}

/// An idempotency claim the turn's store should complete: the claimed key and how long its
/// response is kept.
#[derive(Debug, Clone)]
pub(crate) struct ClaimToComplete {
    pub(crate) key: String,
    pub(crate) retention: Duration,
}

/// The metric label of a failed turn.
pub(crate) fn outcome(error: &agent_core::AgentError) -> &'static str {
    match error {
        agent_core::AgentError::Model(_) => "model_error",
        agent_core::AgentError::StepLimit(_) => "step_limit",
        agent_core::AgentError::TurnBudgetExceeded { .. } => "turn_budget",
        agent_core::AgentError::SessionBudgetExceeded { .. } => "session_budget",
        agent_core::AgentError::DeadlineExceeded(_) => "deadline",
    }
}

fn record_turn(result: &TurnResult, started: Instant) {
    metrics::counter!("agent_turns_total", "outcome" => "completed").increment(1);
    metrics::histogram!("agent_turn_duration_seconds").record(started.elapsed().as_secs_f64());
    metrics::counter!("agent_model_calls_total").increment(result.steps as u64);
    metrics::counter!("agent_tokens_total", "kind" => "prompt")
        .increment(result.turn.usage.prompt_tokens);
    metrics::counter!("agent_tokens_total", "kind" => "completion")
        .increment(result.turn.usage.completion_tokens);
    // No tool-name label: a model can invent names, and labels must stay bounded.
    let tool_calls: usize = result
        .turn
        .messages
        .iter()
        .map(|message| message.tool_calls.len())
        .sum();
    metrics::counter!("agent_tool_calls_total").increment(tool_calls as u64);
}
