//! A turn as the API runs it: take the session lock (bounded wait), read the history window, run
//! the agent, store the whole turn atomically, release. A turn that fails stores nothing. The
//! first turn of a session the server names skips the lock and the read: nobody else can know
//! the id before the turn answers, and the store creates the session with the turn. While the
//! conversation store is failing, such a turn takes the full path instead, so it fails before the
//! model call rather than after it. A session whose last turn this process stored takes its
//! history from [`HistoryCache`] when its lock proves no one else wrote it since.

mod finish;
mod input;

pub(crate) use finish::{ClaimToComplete, Extras, KeepResponse};
pub(crate) use input::{ContextChoice, Conversation, TurnInput, WaitMode};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use agent_config::{Settings, TokenQuotas};
use agent_core::{Message, SessionId, TokenUsage, ToolSpec, TurnContext, TurnRequest, Waits};
use agent_storage::{LockGuard, SessionInfo, StorageError, acquire_lock};
use tracing::Instrument;

use crate::admission::{Admission, TurnSlot};
use crate::agents::{Agents, ServedAgent};
use crate::approvals::ToolApprovals;
use crate::backends::Backends;
use crate::error::{ApiError, ErrorCode};
use crate::history_cache::{History, HistoryCache, Window};
use crate::metrics::TurnMetrics;
use crate::quota::QuotaStatus;
use crate::runs::live::{LiveRun, LogPolicy, LogWriter};
use crate::runs::waiting::{ClientTool, PendingCall, PendingTurn};
use crate::runs::{RunRegistry, RunTicket};

/// Runs turns; shared by `/agent` and `/agent/stream`. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Turns {
    pub(crate) agents: Agents,
    backends: Backends,
    history_window: usize,
    lock_wait: Duration,
    lock_ttl: Duration,
    /// Set when the conversation store last answered "unavailable", cleared when it last
    /// answered at all: a first turn then opens its session first (see the module doc).
    store_failing: Arc<AtomicBool>,
    /// Shared by the process's workers.
    history_cache: HistoryCache,
    metrics: TurnMetrics,
    admission: Arc<Admission>,
    quotas: Arc<TokenQuotas>,
    registry: Arc<RunRegistry>,
    /// How long a run's lease lasts (renewed while it runs).
    run_lease: Duration,
    /// The caps of the queue of background runs.
    queue_caps: QueueCaps,
    log_policy: LogPolicy,
    /// Which tool calls wait for the client's approval (see [`crate::approvals`]).
    approvals: Option<Arc<ToolApprovals>>,
    action_timeout: Duration,
}

/// How many background runs may be queued: by everyone, and by one caller.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueCaps {
    pub(crate) total: usize,
    pub(crate) per_caller: usize,
}

/// What the workers' [`Turns`] share: one of each per process.
#[derive(Debug, Clone)]
pub(crate) struct TurnsShared {
    pub(crate) store_failing: Arc<AtomicBool>,
    pub(crate) history_cache: HistoryCache,
    pub(crate) metrics: TurnMetrics,
    pub(crate) admission: Arc<Admission>,
    pub(crate) registry: Arc<RunRegistry>,
    pub(crate) approvals: Option<Arc<ToolApprovals>>,
}

/// A turn ready to run: the request for the agent, and the held session for `store`.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The agent that answers.
    pub(crate) agent: Arc<ServedAgent>,
    pub(crate) request: TurnRequest,
    pub(crate) held: HeldSession,
}

/// What a turn will be stored into: a locked session, or (for a given conversation) only its
/// caller's usage.
#[derive(Debug)]
pub(crate) struct HeldSession {
    target: Held,
    started: Instant,
    /// The turn's admission, held until it is stored (or fails).
    slot: TurnSlot,
    /// The client's earlier messages, stored before the turn's (see [`TurnInput::earlier`]).
    earlier: Vec<Message>,
    /// The turn's run.
    pub(crate) run: RunTicket,
    /// What a run that stops to wait keeps of its input; none for a turn that cannot wait.
    resumable: Option<Box<PendingTurn>>,
}

#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per turn, moved a few times: boxing the session would cost an allocation per turn"
)]
enum Held {
    Session {
        session: SessionId,
        info: SessionInfo,
        /// None for a session named by this turn (see the module doc).
        guard: Option<LockGuard>,
        /// The history the turn was sent (without instructions), kept for the history cache;
        /// None when the cache is off.
        window: Option<Window>,
        /// The sequence number of the first stored message the turn was sent (a compaction
        /// covers the messages from there).
        history_start: u64,
    },
    Given {
        caller: String,
    },
}

impl HeldSession {
    /// Whether the turn's run can stop to wait for the client (else its calls to the client's
    /// tools are its answer, and it completes).
    pub(crate) fn can_wait(&self) -> bool {
        self.resumable.is_some()
    }

    /// The caller the turn is counted for.
    pub(crate) fn caller(&self) -> &str {
        match &self.target {
            Held::Session { session, .. } => session.owner(),
            Held::Given { caller } => caller,
        }
    }
}

/// A stored turn: what every route answers, in its own shape.
#[derive(Debug, Clone)]
pub(crate) struct Finished {
    /// Unique per turn (the OpenAI-compatible API's completion id).
    pub(crate) id: uuid::Uuid,
    /// When it was stored, in seconds since the Unix epoch.
    pub(crate) created: u64,
    /// The final assistant text.
    pub(crate) text: String,
    /// The session's id as its owner knows it; None for a given conversation.
    pub(crate) session: Option<String>,
    /// Tokens over all the turn's model calls.
    pub(crate) usage: TokenUsage,
    /// The agent that answered (none: read back from a store that does not say).
    pub(crate) agent: Option<String>,
    /// The model of its chain that answered the turn's last call (`x-agent-model`).
    pub(crate) model: Option<String>,
    /// The run the turn was.
    pub(crate) run_id: String,
    /// The calls the turn ended with that the client answers (its tools' calls, approvals),
    /// with why; empty when it finished. A run that waits has stored nothing yet.
    pub(crate) waiting: Vec<PendingCall>,
    /// What fitting it to the context budget did (none: nothing left out).
    pub(crate) context: Option<crate::dto::ContextUse>,
}

/// How a route writes a stored turn's answer as the replay text of its idempotency claim.
pub(crate) type Render = Arc<dyn Fn(&Finished) -> serde_json::Result<String> + Send + Sync>;

/// A [`Render`] of the answer `answer` makes.
pub(crate) fn render_as<R: serde::Serialize>(
    answer: impl Fn(&Finished) -> R + Send + Sync + 'static,
) -> Render {
    Arc::new(move |finished| serde_json::to_string(&answer(finished)))
}

impl Turns {
    /// `store_failing` and `history_cache` are shared by the process's workers.
    pub(crate) fn new(
        agents: Agents,
        backends: Backends,
        settings: &Settings,
        shared: TurnsShared,
    ) -> Self {
        // The lock outlives the turn's deadline, so only a crashed holder lets it expire (a
        // run's lease is short and renewed: see `crate::runs::upkeep`).
        let outliving = settings.turn.turn_deadline + Duration::from_secs(30);
        Self {
            agents,
            backends,
            history_window: settings.turn.history_window,
            lock_wait: settings.api.lock_wait,
            lock_ttl: outliving,
            store_failing: shared.store_failing,
            history_cache: shared.history_cache,
            metrics: shared.metrics,
            admission: shared.admission,
            quotas: Arc::new(settings.api.quotas.clone()),
            registry: shared.registry,
            run_lease: settings.runs.lease,
            queue_caps: QueueCaps {
                total: settings.runs.max_queued,
                per_caller: settings.runs.max_queued_per_caller,
            },
            log_policy: LogPolicy {
                cap: settings.runs.max_events,
                keep: settings.runs.event_retention,
            },
            approvals: shared.approvals,
            action_timeout: settings.runs.action_timeout,
        }
    }

    /// What a turn's tool calls wait for: where the client cannot be asked
    /// ([`WaitMode::Reject`]), a call needing approval is rejected at once (the model reads why).
    fn waits(&self, mode: WaitMode, client_tools: Vec<ToolSpec>) -> Waits {
        let Some(approvals) = &self.approvals else {
            return Waits {
                client_tools,
                ..Waits::default()
            };
        };
        Waits {
            client_tools,
            approval: Some(Arc::clone(approvals) as Arc<dyn agent_core::ApprovalPolicy>),
            unapprovable: (mode == WaitMode::Reject)
                .then(|| crate::approvals::UNAPPROVABLE.to_owned()),
        }
    }

    /// The calls a turn ended with that the client answers, each with its approval's source.
    pub(crate) fn pending_calls(&self, waiting: &[agent_core::WaitingCall]) -> Vec<PendingCall> {
        waiting
            .iter()
            .map(|waiting| {
                let mut pending = PendingCall::from(waiting);
                if pending.wait == crate::runs::waiting::WaitKind::Approval {
                    pending.label = self
                        .approvals
                        .as_ref()
                        .map(|approvals| approvals.label(&waiting.call.name).to_owned());
                }
                pending
            })
            .collect()
    }

    /// How long a waiting run waits for its client.
    pub(crate) fn action_timeout(&self) -> Duration {
        self.action_timeout
    }

    /// The run a turn executes: a claimed one (a queued run this process took, recorded in
    /// progress already) as it is, else a new one, recorded when it ends or once it has run a
    /// while (see [`LiveRun`]).
    fn start_run(
        &self,
        owner: &str,
        session: Option<&SessionId>,
        claimed: &mut Option<RunTicket>,
    ) -> RunTicket {
        claimed
            .take()
            .unwrap_or_else(|| self.ticket(crate::runs::new_run_id(), owner, session, false))
    }

    /// The ticket of run `id` of `owner`, executed by this process from now; `recorded` when the
    /// store has its record (in progress).
    pub(crate) fn ticket(
        &self,
        id: String,
        owner: &str,
        session: Option<&SessionId>,
        recorded: bool,
    ) -> RunTicket {
        let live = LiveRun::new(id, owner, session, recorded);
        RunTicket::new(
            live,
            Arc::clone(&self.registry),
            Arc::clone(&self.backends.runs),
            Arc::clone(&self.backends.background),
        )
    }

    /// Clears the way for run `run` on `session`, whose active run in the store is `active`:
    /// one this process ended while the store missed it is recorded ended now, one whose
    /// executor is gone is failed as lost; any other makes the session busy.
    async fn settle(
        &self,
        session: &SessionId,
        active: Option<String>,
        run: &mut RunTicket,
    ) -> Result<(), ApiError> {
        let Some(active) = active.filter(|active| active != run.id()) else {
            return Ok(());
        };
        let runs = self.backends.runs.as_ref();
        if self.registry.record_missed(runs, &active).await {
            return Ok(());
        }
        let settled = observe(&self.store_failing, runs.settle_session(session).await);
        if let Err(error) = settled {
            let error = ApiError::from(error);
            run.refuse(&error).await;
            return Err(error);
        }
        Ok(())
    }

    pub(crate) fn queue_caps(&self) -> QueueCaps {
        self.queue_caps
    }

    pub(crate) fn run_lease(&self) -> Duration {
        self.run_lease
    }

    pub(crate) fn backends(&self) -> &Backends {
        &self.backends
    }

    pub(crate) fn registry(&self) -> &Arc<RunRegistry> {
        &self.registry
    }

    /// The writer of run `run`'s steps to the shared event log.
    pub(crate) fn log_writer(&self, run: &str) -> LogWriter {
        LogWriter::new(
            Arc::clone(&self.backends.events),
            run.to_owned(),
            self.log_policy,
        )
    }

    /// A slot among the turns in flight, or `503 overloaded`. Taken after the request is
    /// validated and before anything is claimed, locked or read.
    pub(crate) fn admit(&self) -> Result<TurnSlot, ApiError> {
        self.admission.begin_turn()
    }

    /// Whether [`Self::admit`] would admit a turn now.
    pub(crate) fn has_room(&self) -> bool {
        self.admission.has_room()
    }

    /// The slot of a background run taken from the queue (see [`Admission::begin_taken_turn`]).
    pub(crate) fn admit_taken(&self) -> TurnSlot {
        self.admission.begin_taken_turn()
    }

    pub(crate) fn lock_wait(&self) -> Duration {
        self.lock_wait
    }

    /// Locks the session, creates it if new, and reads its history window. A session the server
    /// just named is neither locked nor read: it is empty, and its first store creates it. A
    /// given conversation is neither: it is the history.
    pub(crate) async fn prepare(
        &self,
        input: TurnInput,
        slot: TurnSlot,
    ) -> Result<Prepared, ApiError> {
        self.prepare_run(input, slot, &mut None).await
    }

    /// [`Self::prepare`] for a queued run this process claimed: a refusal fails the run.
    pub(crate) async fn prepare_claimed(
        &self,
        input: TurnInput,
        slot: TurnSlot,
        run: RunTicket,
    ) -> Result<Prepared, ApiError> {
        let mut claimed = Some(run);
        let prepared = self.prepare_run(input, slot, &mut claimed).await;
        if let (Err(error), Some(mut run)) = (&prepared, claimed) {
            // Refused before the run was taken up (its caller's quota, its session's lock).
            run.fail(error).await;
        }
        prepared
    }

    async fn prepare_run(
        &self,
        input: TurnInput,
        slot: TurnSlot,
        claimed: &mut Option<RunTicket>,
    ) -> Result<Prepared, ApiError> {
        let started = Instant::now();
        let TurnInput {
            agent,
            agent_named,
            conversation,
            message,
            mut sampling,
            instructions,
            earlier,
            wait_mode,
            resume,
            client_tools,
            context: choice,
        } = input;
        if sampling.temperature.is_none() {
            sampling.temperature = agent.temperature;
        }
        // Only a stored session's turn waits: a given conversation's is told again in full.
        let wait_mode = match (wait_mode, &conversation) {
            (WaitMode::Suspend, Conversation::Given { .. }) => WaitMode::Answer,
            (mode, _) => mode,
        };
        let (session, new_session, continues_from) = match conversation {
            Conversation::Session {
                session,
                new_session,
                continues_from,
            } => (session, new_session, continues_from),
            Conversation::Given { caller, history } => {
                self.check_quota(&agent.id, &caller).await?;
                let run = self.start_run(&caller, None, claimed);
                let history: Vec<Message> = instructions
                    .into_iter()
                    .chain(history)
                    .chain(earlier)
                    .collect();
                // The client's leading system messages are its instructions: never left out.
                let context = TurnContext {
                    pinned: history
                        .iter()
                        .take_while(|message| message.role == agent_core::Role::System)
                        .count(),
                    strategy: choice.strategy,
                    max_input_tokens: choice.max_input_tokens,
                    ..TurnContext::default()
                };
                let request = TurnRequest {
                    history,
                    user_message: message,
                    session_tokens_used: 0,
                    sampling,
                    waits: self.waits(wait_mode, client_tools),
                    resume,
                    context,
                };
                let target = Held::Given { caller };
                return Ok(Prepared {
                    agent,
                    request,
                    held: HeldSession {
                        target,
                        started,
                        slot,
                        earlier: Vec::new(),
                        run,
                        resumable: None,
                    },
                });
            }
        };
        let span = tracing::Span::current();
        if crate::telemetry::is_traced(&span) {
            let id = session.local().to_owned();
            crate::telemetry::set_attribute(&span, "gen_ai.conversation.id", id.into());
        }
        self.check_quota(&agent.id, session.owner()).await?;
        let (guard, info, history, mut run) =
            if new_session && !self.store_failing.load(Ordering::Relaxed) {
                let run = self.start_run(session.owner(), Some(&session), claimed);
                let info = SessionInfo::empty(session.clone(), SystemTime::now());
                let history = History::default();
                (None, info, history, run)
            } else {
                let guard = acquire_lock(
                    &self.backends.locks,
                    &session,
                    self.lock_ttl,
                    self.lock_wait,
                )
                .instrument(tracing::debug_span!("session.lock"))
                .await;
                let guard = match guard {
                    Ok(guard) => guard,
                    Err(error) => return Err(self.busy(error, &session).await),
                };
                let mut run = self.start_run(session.owner(), Some(&session), claimed);
                // While the store is failing, the read goes to it, so the turn fails before the
                // model call rather than after (see the module doc).
                let cached = (!self.store_failing.load(Ordering::Relaxed))
                    .then(|| self.history_cache.lookup(&session, guard.fencing_token()))
                    .flatten();
                let (info, history) = match cached {
                    Some(cached) => {
                        self.metrics.history(true);
                        cached
                    }
                    None => {
                        self.metrics.history(false);
                        let opened = self
                            .backends
                            .conversations
                            .open_session(&session, self.history_window)
                            .instrument(tracing::debug_span!("session.history"))
                            .await;
                        let opened = match observe(&self.store_failing, opened) {
                            Ok(opened) => opened,
                            Err(error) => {
                                let error = ApiError::from(error);
                                run.fail(&error).await;
                                return Err(error);
                            }
                        };
                        self.settle(&session, opened.active_run, &mut run).await?;
                        (opened.info, self.history_cache.read_back(opened.messages))
                    }
                };
                if let Some(expected) = continues_from
                    && info.next_sequence != expected
                {
                    let error = ApiError::Conflict {
                        code: ErrorCode::ResponseNotLatest,
                        message: "the conversation went on after this previous_response_id: \
                              continue from its latest response"
                            .into(),
                    };
                    run.fail(&error).await;
                    return Err(error);
                }
                (Some(guard), info, history, run)
            };
        let agent = match self.agents.for_session(
            agent,
            agent_named,
            info.agent.as_deref(),
            session.owner(),
        ) {
            Ok(agent) => agent,
            Err(error) => {
                run.fail(&error).await;
                return Err(error);
            }
        };
        // Kept only where a run may stop: a turn without approvals or client tools copies
        // nothing.
        let suspends = wait_mode == WaitMode::Suspend;
        let resumable =
            (suspends && (self.approvals.is_some() || !client_tools.is_empty())).then(|| {
                Box::new(PendingTurn {
                    agent: Some(agent.id.clone()),
                    message: message.clone(),
                    sampling: sampling.clone(),
                    instructions: instructions.clone(),
                    earlier: earlier.clone(),
                    response: None,
                    client_tools: client_tools.iter().map(ClientTool::from).collect(),
                })
            });
        // A summary stands in for the messages it covers.
        let mut history = history;
        let history_start = history.after_summary(&info);
        let context = TurnContext {
            history_tokens: std::iter::repeat_n(None, instructions.len())
                .chain(history.tokens)
                .collect(),
            pinned: instructions.len(),
            strategy: choice.strategy,
            max_input_tokens: choice.max_input_tokens,
            summary: info.summary.as_ref().map(|summary| summary.text.clone()),
            compactable: history.messages.len(),
        };
        let request = TurnRequest {
            history: instructions
                .into_iter()
                .chain(history.messages)
                .chain(earlier.iter().cloned())
                .collect(),
            user_message: message,
            session_tokens_used: info.usage.total(),
            sampling,
            waits: self.waits(wait_mode, client_tools),
            resume,
            context,
        };
        Ok(Prepared {
            agent,
            request,
            held: HeldSession {
                target: Held::Session {
                    session,
                    info,
                    guard,
                    window: history.window,
                    history_start,
                },
                started,
                slot,
                earlier,
                run,
                resumable,
            },
        })
    }

    /// The error of a session whose lock could not be taken: `409 session_busy` naming its
    /// active run when it has one (a background run holds its session's lock while it runs).
    pub(crate) async fn busy(&self, error: StorageError, session: &SessionId) -> ApiError {
        if !matches!(error, StorageError::Locked(_)) {
            return error.into();
        }
        // A run here that has no record yet, or the session's active run in the store.
        let run = match self.registry.live_on(session) {
            Some(live) => Some(live.id.clone()),
            None => match self.backends.runs.session_runs(session, None, 1).await {
                Ok(runs) => runs
                    .into_iter()
                    .find(|run| run.status.is_active())
                    .map(|run| run.id),
                Err(_) => None,
            },
        };
        match run {
            Some(run) => StorageError::SessionBusy {
                session: session.to_string(),
                run,
            }
            .into(),
            None => error.into(),
        }
    }

    /// `429 quota_exceeded` when `caller` has a daily token quota and its stored turns of today
    /// (UTC) have used it. Turns already running when the quota is reached finish and are
    /// counted.
    pub(crate) async fn check_quota(&self, agent: &str, caller: &str) -> Result<(), ApiError> {
        if self.quotas.of(caller).is_none() {
            // Nothing was asked of the store: `observe` must not take it for an answer.
            return Ok(());
        }
        let status =
            QuotaStatus::of(&self.quotas, self.backends.conversations.as_ref(), caller).await;
        match observe(&self.store_failing, status)? {
            Some(status) => status
                .check(caller)
                .inspect_err(|_| self.metrics.quota_refused(agent, caller)),
            None => Ok(()),
        }
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// Notes in `failing` whether the conversation store answered or was unavailable.
fn observe<T>(failing: &AtomicBool, result: Result<T, StorageError>) -> Result<T, StorageError> {
    match &result {
        Err(StorageError::Unavailable { .. }) => failing.store(true, Ordering::Relaxed),
        // Any other answer means it is reachable; a load first keeps the line unshared.
        _ if failing.load(Ordering::Relaxed) => failing.store(false, Ordering::Relaxed),
        _ => {}
    }
    result
}
