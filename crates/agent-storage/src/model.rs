//! Values the stores return.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use agent_core::{Message, SessionId, TokenUsage};

/// A session's metadata and totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub id: SessionId,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    /// The sequence number the next stored message gets; also the message count.
    pub next_sequence: u64,
    pub turn_count: u64,
    /// Tokens used by all turns of the session.
    pub usage: TokenUsage,
    /// The agent it belongs to: its first turn's (none: stored before agents were named, or
    /// no turn yet).
    pub agent: Option<String>,
    /// The summary of its earlier turns (none: never compacted).
    pub summary: Option<SessionSummary>,
}

/// A session's summary of its earlier turns: it stands in for the messages before `through` in
/// later turns' requests (they stay stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    pub text: String,
    /// The sequence number of the first message it does not cover.
    pub through: u64,
}

/// A caller's turns and tokens on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyUsage {
    pub owner: String,
    pub day: chrono::NaiveDate,
    /// The agent of these turns (none: counted before agents were named).
    pub agent: Option<String>,
    pub turns: u64,
    pub usage: TokenUsage,
}

/// Where a listing of sessions continues: after this session, in the order newest created first
/// (creation times never change, so pages neither skip nor repeat while sessions are created or
/// continued).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCursor {
    pub created_at: SystemTime,
    pub id: SessionId,
}

impl SessionInfo {
    /// The cursor that continues a listing after this session.
    pub fn cursor(&self) -> SessionCursor {
        SessionCursor {
            created_at: self.created_at,
            id: self.id.clone(),
        }
    }

    /// Whether this session comes after `cursor` in a listing.
    pub fn is_after(&self, cursor: &SessionCursor) -> bool {
        (self.created_at, &self.id) < (cursor.created_at, &cursor.id)
    }

    /// A session with no turn yet, created `now`.
    pub fn empty(id: SessionId, now: SystemTime) -> Self {
        Self {
            id,
            created_at: now,
            updated_at: now,
            next_sequence: 0,
            turn_count: 0,
            usage: TokenUsage::default(),
            agent: None,
            summary: None,
        }
    }
}

/// A message as stored, with its position in the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// 0, 1, 2, ... without gaps within a session.
    pub sequence: u64,
    pub message: Message,
    /// On the last message of each turn: the tokens the whole turn used.
    pub tokens: Option<u64>,
    pub created_at: SystemTime,
    /// What the message takes of a model's context, as its agent counted it (none: not
    /// counted).
    pub context_tokens: Option<u64>,
}

/// A held session lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockLease {
    pub session: SessionId,
    /// Random per acquisition; only the owner can release.
    pub owner: String,
    /// Strictly increasing per session across acquisitions: a later holder has a larger token.
    pub fencing_token: u64,
    pub ttl: Duration,
}

/// The answer of a rate limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    Allowed { remaining: u32 },
    Limited { retry_after: Duration },
}

/// The answer to "may I run the request with this idempotency key?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// The key is new (or its record expired): run the request, then `complete` or `abandon`.
    Started,
    /// Another request with this key and body is running.
    InProgress,
    /// A request with this key and body completed: here is its stored response.
    Completed(String),
    /// The key was used with a different request body.
    Mismatch,
}

/// An idempotency claim to complete in the same transaction as the turn it ran: the response to
/// replay, kept for `retention`.
#[derive(Debug, Clone, Copy)]
pub struct IdempotencyCompletion<'a> {
    pub key: &'a str,
    pub response: &'a str,
    pub retention: std::time::Duration,
}

/// What a turn's store writes with it, in the same atomic step.
#[derive(Debug, Clone, Copy, Default)]
pub struct TurnRecord<'a> {
    /// An idempotency claim to complete with the turn's response.
    pub idempotency: Option<IdempotencyCompletion<'a>>,
    /// A response (the OpenAI-compatible Responses API) to keep under its id.
    pub response: Option<ResponseRecord<'a>>,
    /// The run the turn completes: the turn is stored only while the run is in progress, and
    /// the run is completed only with its turn.
    pub run: Option<RunCompletion<'a>>,
    /// The agent whose turn it is: the session's from its first turn on (a session that has an
    /// agent keeps it).
    pub agent: Option<&'a str>,
    /// A compaction the turn made: the session's summary from now on.
    pub summary: Option<SummaryRecord<'a>>,
}

/// A session's new summary, covering the messages before `through` (a sequence number); made
/// from the summary before, which it replaces.
#[derive(Debug, Clone, Copy)]
pub struct SummaryRecord<'a> {
    pub text: &'a str,
    pub through: u64,
}

/// A response (the OpenAI-compatible Responses API) to keep with its turn: the facts the server
/// renders it from, never its rendered JSON. Its usage is the turn's.
#[derive(Debug, Clone, Copy)]
pub struct ResponseRecord<'a> {
    /// The API's id of it (opaque here).
    pub id: &'a str,
    pub created_at: SystemTime,
    pub parameters: &'a ResponseParameters,
    /// The turn's final answer.
    pub output_text: &'a str,
}

/// What the request of a response asked for, kept to be shown with it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResponseParameters {
    pub model: String,
    pub instructions: Option<String>,
    pub previous_response_id: Option<String>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub max_output_tokens: Option<u32>,
    /// The end user the client named.
    pub user: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// The answer's format as the client gave it (a JSON object), when it gave one.
    pub text_format: Option<serde_json::Value>,
}

/// A kept response: the session its turn was stored in, the session's `next_sequence` once it
/// was (its place in the conversation), when, what was asked and what was answered. Deleted
/// with its session.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    pub id: String,
    pub session: SessionId,
    pub sequence: u64,
    pub created_at: SystemTime,
    pub parameters: ResponseParameters,
    pub output_text: String,
    pub usage: TokenUsage,
}

/// Where a run is in its life: `Queued`, `InProgress` and `RequiresAction` are active (a session
/// has at most one active run), the others are terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunStatus {
    Queued,
    InProgress,
    /// Stopped before tool calls the client must answer: no executor holds it (see
    /// [`crate::RunStore::suspend_run`]).
    RequiresAction,
    Completed,
    Failed,
    Cancelled,
}

impl RunStatus {
    /// Its name in the API and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::InProgress => "in_progress",
            Self::RequiresAction => "requires_action",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Queued,
            Self::InProgress,
            Self::RequiresAction,
            Self::Completed,
            Self::Failed,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }

    /// Queued, in progress or waiting for the client: the run holds its session.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Queued | Self::InProgress | Self::RequiresAction)
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A run to record in progress (or, with [`crate::RunStore::record_run_end`], ended).
#[derive(Debug, Clone, Copy)]
pub struct NewRun<'a> {
    /// The API's id of it (opaque here).
    pub id: &'a str,
    /// The caller it belongs to.
    pub owner: &'a str,
    /// The session it continues; none for a conversation the client sent whole.
    pub session: Option<&'a SessionId>,
    /// Whether it outlives its request.
    pub background: bool,
    /// Who executes it (its replica), for how long unless renewed.
    pub holder: &'a str,
    pub lease: Duration,
    /// When it started (a run recorded a while after it started keeps its start).
    pub started_at: SystemTime,
}

/// A background run to queue: any replica's executor may claim it.
#[derive(Debug, Clone, Copy)]
pub struct QueuedRun<'a> {
    pub id: &'a str,
    pub owner: &'a str,
    pub session: Option<&'a SessionId>,
    /// What its executor needs to run it (opaque here; kept until it is claimed).
    pub input: &'a str,
    /// Runs queued at most, by its owner and by everyone: past either, [`crate::StorageError::QueueFull`].
    pub max_per_owner: usize,
    pub max_total: usize,
}

/// A queued run an executor took: in progress now, leased to it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedRun {
    pub record: RunRecord,
    pub input: String,
}

/// The webhook event of a background run's terminal state, as its sender takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEvent {
    /// `evt_` and 32 hex digits: the `webhook-id` of every attempt.
    pub id: String,
    pub run_id: String,
    /// The run's caller.
    pub owner: String,
    /// `response.completed`, `response.failed` or `response.cancelled`.
    pub kind: String,
    /// What `data.id` names: the run, or the background response its run is.
    pub subject: String,
    pub created_at: SystemTime,
    /// Attempts made so far.
    pub attempts: u32,
    /// The endpoints (their URLs) that acknowledged it.
    pub delivered_to: Vec<String>,
}

/// A run as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub id: String,
    pub owner: String,
    pub session: Option<SessionId>,
    pub status: RunStatus,
    pub background: bool,
    pub created_at: SystemTime,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    /// Why a failed or cancelled run ended.
    pub error: Option<RunError>,
    /// A completed run's final answer.
    pub output_text: Option<String>,
    /// A completed run's tokens.
    pub usage: TokenUsage,
    /// Until when its executor holds it (an active run).
    pub lease_expires_at: Option<SystemTime>,
    /// What a run waiting for the client keeps (only while it waits; read with the run by
    /// [`crate::RunStore::run`] and [`crate::RunStore::session_runs`]).
    pub action: Option<RunAction>,
}

/// What a run waiting for the client keeps: everything needed to continue it (opaque here: the
/// server's JSON), until when it waits, and the version an answer is written over (see
/// [`crate::RunStore::answer_run`]; never the same twice for a run).
#[derive(Debug, Clone, PartialEq)]
pub struct RunAction {
    pub pending: String,
    pub expires_at: SystemTime,
    pub version: u64,
}

/// The error code of a run whose wait for the client expired.
pub const ACTION_EXPIRED: &str = "action_expired";

/// How a run whose wait for the client expired ends.
pub(crate) const EXPIRED: RunEnd<'static> = RunEnd::Failed {
    code: ACTION_EXPIRED,
    message: "the run waited for the client's answer longer than it may; nothing was stored",
};

/// What answering a waiting run did.
#[derive(Debug, Clone, PartialEq)]
pub enum Answered {
    /// Written: the record as it is now (waiting still, or in progress again).
    Now(RunRecord),
    /// Not written: the run is no longer waiting at the version the answer read (answered
    /// meanwhile, cancelled, expired); the record as it is.
    Moved(RunRecord),
    /// No such run.
    Missing,
}

/// An answer to a waiting run: its pending state with the answers in (opaque here), and, when
/// it is answered in full, who resumes it.
#[derive(Debug, Clone, Copy)]
pub struct RunAnswer<'a> {
    pub id: &'a str,
    /// The [`RunAction::version`] the answer was made from.
    pub version: u64,
    pub pending: &'a str,
    /// Resume it now: in progress, leased to this holder for this long. None: it waits on.
    pub resume: Option<(&'a str, Duration)>,
}

/// Why a run failed or was cancelled: a stable code and a readable message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunError {
    pub code: String,
    pub message: String,
}

/// The error code of a run whose executor's lease expired (its replica is gone): tools may have
/// run, so it is not retried.
pub const RUN_LOST: &str = "run_lost";

/// How a run ends without a stored turn (a completed run ends with its turn's store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd<'a> {
    Failed { code: &'a str, message: &'a str },
    Cancelled { code: &'a str, message: &'a str },
}

impl RunEnd<'_> {
    pub fn status(&self) -> RunStatus {
        match self {
            Self::Failed { .. } => RunStatus::Failed,
            Self::Cancelled { .. } => RunStatus::Cancelled,
        }
    }

    pub fn error(&self) -> RunError {
        let (Self::Failed { code, message } | Self::Cancelled { code, message }) = self;
        RunError {
            code: (*code).to_owned(),
            message: (*message).to_owned(),
        }
    }
}

/// What ending a run did.
#[derive(Debug, Clone, PartialEq)]
pub enum Ended {
    /// It was active and is now ended: the record as it is now.
    Now(RunRecord),
    /// It had already ended (or completed): the record as it is.
    Already(RunRecord),
    /// No such run.
    Missing,
}

/// A run completed by a turn's store, in the same atomic step: its id and final answer (its
/// tokens are the turn's).
#[derive(Debug, Clone, Copy)]
pub struct RunCompletion<'a> {
    pub id: &'a str,
    pub output_text: &'a str,
    /// A run the store has no record of yet (a run not in the background is recorded when it
    /// ends, or once it has run a while): recorded completed by the same step. None: its record
    /// is in progress, and completed only while it is.
    pub origin: Option<RunOrigin<'a>>,
}

/// Who started a run the store has no record of, and when (its session is its turn's).
#[derive(Debug, Clone, Copy)]
pub struct RunOrigin<'a> {
    pub owner: &'a str,
    pub started_at: SystemTime,
}

/// A session opened for a turn: its state, its last messages (oldest first), and its active run,
/// if it has one (a turn may not start beside it).
#[derive(Debug, Clone)]
pub struct OpenedSession {
    pub info: SessionInfo,
    pub messages: Vec<StoredMessage>,
    pub active_run: Option<String>,
}

/// Where a listing of a session's runs continues: after this run, newest created first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCursor {
    pub created_at: SystemTime,
    pub id: String,
}

/// One event of a run's log: its number (increasing within the run, from the writer) and its
/// payload (opaque here: the server's JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedEvent {
    pub seq: u64,
    pub data: String,
}
