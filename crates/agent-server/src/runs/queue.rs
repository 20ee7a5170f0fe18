//! Background runs: a request queues its run durably (a `queued` row of the run store, holding
//! what the turn needs) and is answered at once; each replica's dispatcher takes queued runs,
//! oldest first, while it has room for a turn (the same turns-in-flight limit as requests), and
//! executes them apart from any request. A replica that stops leaves its queued runs to the
//! others: nothing is taken before it can run.

use std::sync::Arc;
use std::time::Duration;

use agent_core::{Message, Sampling};
use agent_storage::{ClaimedRun, QueuedRun, ResponseParameters, RunRecord, acquire_lock};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::executor::{Mode, execute};
use super::waiting::ClientTool;
use crate::agents::Agents;
use crate::error::{ApiError, ErrorCode};
use crate::turn::{ContextChoice, Conversation, Extras, KeepResponse, TurnInput, Turns, WaitMode};

/// A queued run's turn as the store keeps it: its input without the run's owner and session
/// (the run's record has them).
#[derive(Debug, Serialize, Deserialize)]
struct QueuedTurn {
    /// The agent the request named (none: the default one, or the session's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    agent: Option<String>,
    message: String,
    #[serde(default)]
    sampling: Sampling,
    #[serde(default)]
    instructions: Vec<Message>,
    #[serde(default)]
    earlier: Vec<Message>,
    /// The request named no session: it was made for this run.
    #[serde(default)]
    new_session: bool,
    #[serde(default)]
    continues_from: Option<u64>,
    /// A conversation the client sent whole (no session).
    #[serde(default)]
    given: Option<Vec<Message>>,
    /// The response object its turn keeps (the Responses API), kept with the run from the
    /// start so that the response reads back while queued or running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    response: Option<QueuedResponse>,
    /// What its calls needing the client do (see [`TurnInput::wait_mode`]).
    #[serde(default)]
    wait_mode: WaitMode,
    /// The client's own tools it offers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    client_tools: Vec<ClientTool>,
    /// The request's choice of context policy.
    #[serde(default, skip_serializing_if = "is_default")]
    context: ContextChoice,
}

fn is_default(choice: &ContextChoice) -> bool {
    *choice == ContextChoice::default()
}

/// A [`KeepResponse`] as a queued run keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct QueuedResponse {
    pub(crate) id: String,
    pub(crate) created_at: u64,
    pub(crate) parameters: ResponseParameters,
}

impl From<&KeepResponse> for QueuedResponse {
    fn from(keep: &KeepResponse) -> Self {
        Self {
            id: keep.id.clone(),
            created_at: keep.created_at,
            parameters: (*keep.parameters).clone(),
        }
    }
}

impl From<QueuedResponse> for KeepResponse {
    fn from(queued: QueuedResponse) -> Self {
        Self {
            id: queued.id,
            created_at: queued.created_at,
            parameters: Arc::new(queued.parameters),
        }
    }
}

/// The response a queued run's input keeps, if any (the Responses API's background responses).
pub(crate) fn queued_response(input: &str) -> Option<QueuedResponse> {
    serde_json::from_str::<QueuedTurn>(input).ok()?.response
}

/// The run of the background response `id` (`resp_<hex>` is run `run_<hex>`).
pub(crate) fn run_of_response(id: &str) -> Option<String> {
    let hex = id.strip_prefix("resp_")?;
    let run = format!("run_{hex}");
    crate::dto::runs::is_run_id(&run).then_some(run)
}

impl QueuedTurn {
    fn new(input: TurnInput, keep: Option<&KeepResponse>) -> Self {
        let (new_session, continues_from, given) = match input.conversation {
            Conversation::Session {
                new_session,
                continues_from,
                ..
            } => (new_session, continues_from, None),
            Conversation::Given { history, .. } => (false, None, Some(history)),
        };
        Self {
            agent: input.agent_named.then(|| input.agent.id.clone()),
            message: input.message,
            sampling: input.sampling,
            instructions: input.instructions,
            earlier: input.earlier,
            new_session,
            continues_from,
            given,
            response: keep.map(QueuedResponse::from),
            wait_mode: input.wait_mode,
            client_tools: input.client_tools.iter().map(ClientTool::from).collect(),
            context: input.context,
        }
    }

    /// The turn of the run `record`, and what its store keeps besides.
    fn into_input(
        self,
        record: &RunRecord,
        agents: &Agents,
    ) -> Result<(TurnInput, Extras), String> {
        let agent_named = self.agent.is_some();
        let agent = agents.of_run(self.agent.as_deref())?;
        let conversation = match (self.given, &record.session) {
            (Some(history), _) => Conversation::Given {
                caller: record.owner.clone(),
                history,
            },
            (None, Some(session)) => Conversation::Session {
                session: session.clone(),
                new_session: self.new_session,
                continues_from: self.continues_from,
            },
            (None, None) => return Err("a queued run with neither session nor conversation".into()),
        };
        let input = TurnInput {
            agent,
            agent_named,
            conversation,
            message: self.message,
            sampling: self.sampling,
            instructions: self.instructions,
            earlier: self.earlier,
            wait_mode: self.wait_mode,
            resume: None,
            client_tools: self.client_tools.into_iter().map(Into::into).collect(),
            context: self.context,
        };
        let extras = Extras {
            claim: None,
            response: self.response.map(KeepResponse::from),
        };
        Ok((input, extras))
    }
}

/// Bound on the session lock taken while a run is queued (it is released at once).
const QUEUE_LOCK_TTL: Duration = Duration::from_secs(30);

/// How long a caller at its cap of queued runs is told to wait.
const QUEUE_FULL_RETRY: Duration = Duration::from_secs(2);

impl Turns {
    /// Queues `input` as a background run of `owner` and wakes this process's dispatcher; a
    /// response to keep names the run (see [`run_of_response`]).
    pub(crate) async fn enqueue(
        &self,
        input: TurnInput,
        owner: &str,
        keep: Option<KeepResponse>,
    ) -> Result<RunRecord, ApiError> {
        self.check_quota(&input.agent.id, owner).await?;
        let input_session = match &input.conversation {
            Conversation::Session {
                session,
                new_session,
                ..
            } => Some((session.clone(), *new_session)),
            Conversation::Given { .. } => None,
        };
        let session = input_session.as_ref().map(|(session, _)| session.clone());
        let id = keep
            .as_ref()
            .and_then(|keep| run_of_response(&keep.id))
            .unwrap_or_else(super::new_run_id);
        let text = serde_json::to_string(&QueuedTurn::new(input, keep.as_ref()))
            .map_err(|error| ApiError::Internal(error.into()))?;
        // The session's lock for the moment the run is queued: a turn on it (whose run may have
        // no record yet) makes it busy, and the next turn there, taking the lock after this,
        // reads the session (so finds this run) rather than its cached history.
        let guard = match &input_session {
            Some((session, false)) => {
                let locks = &self.backends().locks;
                match acquire_lock(locks, session, QUEUE_LOCK_TTL, Duration::ZERO).await {
                    Ok(guard) => Some(guard),
                    Err(error) => return Err(self.busy(error, session).await),
                }
            }
            _ => None,
        };
        let caps = self.queue_caps();
        let queued = self
            .backends()
            .runs
            .enqueue_run(QueuedRun {
                id: &id,
                owner,
                session: session.as_ref(),
                input: &text,
                max_per_owner: caps.per_caller,
                max_total: caps.total,
            })
            .await
            .map_err(|error| match error {
                agent_storage::StorageError::QueueFull { per_owner, queued } => {
                    queue_full(per_owner, queued)
                }
                other => ApiError::from(other),
            });
        if let Some(guard) = guard
            && let Err(error) = guard.release().await
        {
            tracing::warn!(%error, "releasing a session lock failed; retrying in the background");
        }
        let queued = queued?;
        self.registry().wake_dispatcher();
        Ok(queued)
    }
}

fn queue_full(per_owner: bool, queued: usize) -> ApiError {
    if per_owner {
        ApiError::Limited {
            code: ErrorCode::TooManyQueuedRuns,
            message: format!(
                "this caller has {queued} background runs queued, its limit \
                 (AGENT_RUNS__MAX_QUEUED_PER_CALLER); retry when some have started"
            ),
            retry_after: QUEUE_FULL_RETRY,
        }
    } else {
        ApiError::Unavailable {
            code: ErrorCode::Overloaded,
            message: format!("the queue of background runs is full ({queued} queued); retry later"),
            retry_after: Some(QUEUE_FULL_RETRY),
            cause: None,
        }
    }
}

/// The dispatcher's task: takes queued runs while this process has room for a turn, until
/// `stop` (the drain began). `poll` is how often it looks when nothing woke it.
pub(crate) fn spawn_dispatcher(
    turns: Arc<Turns>,
    poll: Duration,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let wake = turns.registry().dispatcher_wake();
        loop {
            let pause = tokio::select! {
                () = stop.cancelled() => return,
                pause = take_one(&turns) => pause,
            };
            if !pause {
                continue;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = wake.notified() => {}
                () = tokio::time::sleep(poll) => {}
            }
        }
    })
}

/// Takes and starts one queued run if there is room and one; answers whether to pause.
async fn take_one(turns: &Arc<Turns>) -> bool {
    if !turns.has_room() {
        // The turns in flight have every slot.
        return true;
    }
    let holder = turns.registry().holder().to_owned();
    let claimed = match turns
        .backends()
        .runs
        .claim_run(&holder, turns.run_lease())
        .await
    {
        Ok(Some(claimed)) => claimed,
        Ok(None) => return true,
        Err(error) => {
            tracing::warn!(%error, "taking a queued run failed; trying again later");
            return true;
        }
    };
    let slot = turns.admit_taken();
    let ClaimedRun { record, input } = claimed;
    let span = tracing::info_span!("run", run_id = %record.id, background = true);
    let mut ticket = turns.ticket(
        record.id.clone(),
        &record.owner,
        record.session.as_ref(),
        true,
    );
    let input = serde_json::from_str::<QueuedTurn>(&input)
        .map_err(|error| error.to_string())
        .and_then(|queued| queued.into_input(&record, &turns.agents));
    let (input, extras) = match input {
        Ok(input) => input,
        Err(problem) => {
            let error = ApiError::Internal(anyhow::anyhow!("run {}: {problem}", record.id));
            tracing::error!(run = %record.id, %problem, "a queued run cannot be read");
            ticket.fail(&error).await;
            return false;
        }
    };
    let turns = Arc::clone(turns);
    tokio::spawn(
        async move {
            // A refusal fails the run (prepare_claimed); the run's record says why.
            if let Ok(prepared) = turns.prepare_claimed(input, slot, ticket).await {
                execute(&turns, prepared, extras, Mode::Background).detach();
            }
        }
        .instrument(span),
    );
    false
}
