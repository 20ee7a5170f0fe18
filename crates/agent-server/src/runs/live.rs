//! A run as this process executes it: its events as they happen (for the requests that watch it
//! here), its cancellation, and the writer that copies its events to the shared event log (for
//! readers on other replicas and for resumption).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use agent_core::{SessionId, TokenUsage, ToolCall};
use agent_storage::{
    Ended, EventLog, LoggedEvent, NewRun, RunEnd, RunRecord, RunStatus, RunStore, StorageError,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::dto::ToolResultEvent;
use crate::error::ApiError;
use crate::turn::Finished;

/// What happens in a run, in order: its steps, then one terminal event. Numbered from 1 (0 is
/// the `run` event every stream starts with).
#[derive(Debug, Clone)]
pub(crate) enum LiveEvent {
    Step(StepEvent),
    /// The turn is stored.
    Done(Finished),
    /// The run ended without a stored turn.
    Failed(Arc<ApiError>),
}

/// A step of a run, as the event log keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum StepEvent {
    Delta { text: String },
    ToolCall { call: ToolCallStep },
    ToolResult { result: ToolResultEvent },
}

/// A tool call as the log keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ToolCallStep {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) arguments: String,
}

impl From<ToolCall> for ToolCallStep {
    fn from(call: ToolCall) -> Self {
        Self {
            id: call.id,
            name: call.name,
            arguments: call.arguments,
        }
    }
}

impl From<ToolCallStep> for ToolCall {
    fn from(call: ToolCallStep) -> Self {
        Self {
            id: call.id,
            name: call.name,
            arguments: call.arguments,
        }
    }
}

/// Why a run was cancelled in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CancelReason {
    /// `POST /runs/{id}/cancel`: the canceller already ended the run in the store.
    Requested,
    /// The request that waited for it went away.
    Disconnected,
    /// The drain window ended.
    Shutdown,
}

/// A run executing in this process. One not in the background has no record in the store until
/// it ends or has run for [`RECORD_AFTER`] (see [`crate::runs::upkeep`]): most turns are over by
/// then, and a record written at the end costs them no statement of its own. Until then its
/// replica answers for it; a session's lock (held by its turn) keeps another turn off its
/// session meanwhile.
#[derive(Debug)]
pub(crate) struct LiveRun {
    pub(crate) id: String,
    /// The session's id as its owner knows it; none for a given conversation.
    pub(crate) session: Option<String>,
    pub(crate) session_id: Option<SessionId>,
    pub(crate) owner: String,
    pub(crate) background: bool,
    pub(crate) started_at: SystemTime,
    /// Whether the store has its record; changed only under `recording`, so that the turn's
    /// store, its end and the upkeep never record it twice.
    recorded: AtomicBool,
    recording: tokio::sync::Mutex<()>,
    token: CancellationToken,
    reason: Mutex<Option<CancelReason>>,
    events: Mutex<Vec<LiveEvent>>,
    /// How many events there are; watchers wait on it.
    count: watch::Sender<usize>,
}

/// How long a run not in the background runs before the store gets its record (in progress,
/// leased): from then on other replicas read and cancel it, and its lease is renewed.
pub(crate) const RECORD_AFTER: Duration = Duration::from_secs(1);

impl LiveRun {
    /// A run of `owner` on `session`, started now; `recorded` when the store has its record (a
    /// background run's, claimed from the queue).
    pub(crate) fn new(
        id: String,
        owner: &str,
        session: Option<&SessionId>,
        recorded: bool,
    ) -> Self {
        Self {
            id,
            session: session.map(|session| session.local().to_owned()),
            session_id: session.cloned(),
            owner: owner.to_owned(),
            background: recorded,
            started_at: SystemTime::now(),
            recorded: AtomicBool::new(recorded),
            recording: tokio::sync::Mutex::new(()),
            token: CancellationToken::new(),
            reason: Mutex::new(None),
            events: Mutex::new(Vec::new()),
            count: watch::Sender::new(0),
        }
    }

    /// Whether the store has the run's record.
    pub(crate) fn is_recorded(&self) -> bool {
        self.recorded.load(Ordering::Acquire)
    }

    /// Holds off every other recording of the run until dropped: while held, whether it is
    /// recorded is settled ([`Recording::mark`] records that it is now).
    pub(crate) async fn recording(&self) -> Recording<'_> {
        Recording {
            run: self,
            _held: self.recording.lock().await,
        }
    }

    /// [`Self::recording`] if no one else holds it.
    pub(crate) fn try_recording(&self) -> Option<Recording<'_>> {
        let held = self.recording.try_lock().ok()?;
        Some(Recording {
            run: self,
            _held: held,
        })
    }

    /// The run as the store records it, leased to `holder` for `lease`.
    pub(crate) fn new_run<'a>(&'a self, holder: &'a str, lease: Duration) -> NewRun<'a> {
        NewRun {
            id: &self.id,
            owner: &self.owner,
            session: self.session_id.as_ref(),
            background: self.background,
            holder,
            lease,
            started_at: self.started_at,
        }
    }

    /// The run as its record would say now: in progress.
    pub(crate) fn record(&self) -> RunRecord {
        RunRecord {
            id: self.id.clone(),
            owner: self.owner.clone(),
            session: self.session_id.clone(),
            status: RunStatus::InProgress,
            background: self.background,
            created_at: self.started_at,
            started_at: Some(self.started_at),
            finished_at: None,
            error: None,
            output_text: None,
            usage: TokenUsage::default(),
            lease_expires_at: None,
            action: None,
        }
    }

    /// Ends the run in `store`: its record, or a record of it ended if it had none.
    pub(crate) async fn end_in(
        &self,
        store: &dyn RunStore,
        end: RunEnd<'_>,
    ) -> Result<Ended, StorageError> {
        let recording = self.recording().await;
        let ended = if recording.is_recorded() {
            store.end_run(&self.id, end).await
        } else {
            store
                .record_run_end(self.new_run("", Duration::ZERO), end)
                .await
        };
        if ended.is_ok() {
            recording.mark();
        }
        ended
    }

    /// Cancels the run (the first reason given is kept).
    pub(crate) fn cancel(&self, reason: CancelReason) {
        self.reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(reason);
        self.token.cancel();
    }

    pub(crate) fn cancel_reason(&self) -> Option<CancelReason> {
        *self.reason.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn cancellation(&self) -> CancellationToken {
        self.token.clone()
    }

    pub(crate) fn push(&self, event: LiveEvent) {
        let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        events.push(event);
        let count = events.len();
        drop(events);
        self.count.send_replace(count);
    }

    /// A watcher of the run's events, from the first.
    pub(crate) fn watch(self: &Arc<Self>) -> LiveWatcher {
        LiveWatcher {
            run: Arc::clone(self),
            seen: 0,
            changes: self.count.subscribe(),
        }
    }
}

/// The right to record a live run (see [`LiveRun::recording`]).
#[derive(Debug)]
pub(crate) struct Recording<'a> {
    run: &'a LiveRun,
    _held: tokio::sync::MutexGuard<'a, ()>,
}

impl<'a> Recording<'a> {
    pub(crate) fn run(&self) -> &'a LiveRun {
        self.run
    }

    pub(crate) fn is_recorded(&self) -> bool {
        self.run.is_recorded()
    }

    /// The store has the run's record now.
    pub(crate) fn mark(&self) {
        self.run.recorded.store(true, Ordering::Release);
    }
}

/// Reads a live run's events in order, waiting for the next ones.
#[derive(Debug)]
pub(crate) struct LiveWatcher {
    run: Arc<LiveRun>,
    seen: usize,
    changes: watch::Receiver<usize>,
}

impl LiveWatcher {
    /// The events after those already read, waiting for at least one; empty only when the run's
    /// executor is gone without a terminal event (it panicked).
    pub(crate) async fn next(&mut self) -> Vec<LiveEvent> {
        loop {
            {
                let events = self
                    .run
                    .events
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if events.len() > self.seen {
                    let new = events[self.seen..].to_vec();
                    self.seen = events.len();
                    return new;
                }
            }
            if self.changes.changed().await.is_err() {
                return Vec::new();
            }
        }
    }
}

/// The log's last entry of a run that logged steps: its number is the terminal event's.
pub(crate) const END_MARK: &str = r#"{"type":"end"}"#;

/// How many events of a run the shared log keeps, and for how long after its last append.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogPolicy {
    pub(crate) cap: usize,
    pub(crate) keep: Duration,
}

/// Copies a run's step events to the shared log, in batches: an append is in flight at most
/// once per run, and the events that arrive meanwhile go with the next one. Losing the log loses
/// live resumption, never the run's result, so a failed append is logged and dropped.
#[derive(Debug)]
pub(crate) struct LogWriter {
    log: Arc<dyn EventLog>,
    run: String,
    policy: LogPolicy,
    pending: Vec<LoggedEvent>,
    next_seq: u64,
    in_flight: Option<JoinHandle<()>>,
}

impl LogWriter {
    pub(crate) fn new(log: Arc<dyn EventLog>, run: String, policy: LogPolicy) -> Self {
        Self {
            log,
            run,
            policy,
            pending: Vec::new(),
            // 0 is the `run` event, which readers make themselves.
            next_seq: 1,
            in_flight: None,
        }
    }

    /// Queues `step` and starts an append if none is in flight.
    pub(crate) fn push(&mut self, step: &StepEvent) {
        let data = serde_json::to_string(step)
            .unwrap_or_else(|error| format!(r#"{{"type":"unserialisable","error":"{error}"}}"#));
        self.pending.push(LoggedEvent {
            seq: self.next_seq,
            data,
        });
        self.next_seq += 1;
        if self.in_flight.as_ref().is_none_or(JoinHandle::is_finished) {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        if LOG_OUTAGE.is_down() {
            // The log failed a moment ago: the run goes on without waiting for it.
            return;
        }
        let (log, run, policy) = (Arc::clone(&self.log), self.run.clone(), self.policy);
        self.in_flight = Some(tokio::spawn(async move {
            if let Err(error) = log.append(&run, &batch, policy.cap, policy.keep).await {
                LOG_OUTAGE.failed(&error);
            }
        }));
    }

    /// Writes what is left and the end mark (the number the terminal event gets); the run's
    /// terminal state is written after this, so a reader that sees it finds every step in the
    /// log. A run that logged no step logs nothing: its terminal event is number 1.
    pub(crate) async fn finish(mut self) {
        if let Some(in_flight) = self.in_flight.take() {
            let _ = in_flight.await;
        }
        if self.next_seq > 1 {
            self.pending.push(LoggedEvent {
                seq: self.next_seq,
                data: END_MARK.to_owned(),
            });
        }
        self.flush();
        if let Some(in_flight) = self.in_flight.take() {
            let _ = in_flight.await;
        }
    }
}

/// How long after a failed append the runs of this process stop appending (the log is down:
/// Redis stopped, say), so that an outage costs neither a wait per step nor a log line per run.
const OUTAGE_PAUSE: Duration = Duration::from_secs(1);
/// At most one warning about a failing log per this long.
const OUTAGE_WARN_EVERY: Duration = Duration::from_secs(10);

/// The process's view of the shared log's health.
static LOG_OUTAGE: LogOutage = LogOutage {
    down_until: Mutex::new(None),
    warned: Mutex::new(None),
    failures: std::sync::atomic::AtomicU64::new(0),
};

struct LogOutage {
    down_until: Mutex<Option<std::time::Instant>>,
    warned: Mutex<Option<std::time::Instant>>,
    failures: std::sync::atomic::AtomicU64,
}

impl LogOutage {
    fn is_down(&self) -> bool {
        self.down_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|until| std::time::Instant::now() < until)
    }

    fn failed(&self, error: &agent_storage::StorageError) {
        let now = std::time::Instant::now();
        *self
            .down_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(now + OUTAGE_PAUSE);
        let failures = self
            .failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        if warned.is_none_or(|at| now.duration_since(at) >= OUTAGE_WARN_EVERY) {
            *warned = Some(now);
            drop(warned);
            tracing::warn!(%error, failures, "appending to runs' event log failed: runs go on, but cannot be resumed elsewhere meanwhile");
        }
    }
}
