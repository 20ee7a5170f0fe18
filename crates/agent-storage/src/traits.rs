//! The storage ports. Each is implemented in memory, and by Postgres or Redis.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agent_core::{SessionId, TokenUsage, Turn};
use async_trait::async_trait;

use crate::background::BackgroundWork;
use crate::error::StorageError;
use crate::model::{
    Answered, ClaimedRun, DailyUsage, Ended, IdempotencyBegin, LockLease, LoggedEvent, NewRun,
    OpenedSession, QueuedRun, RateDecision, RunAnswer, RunCompletion, RunCursor, RunEnd, RunRecord,
    SessionCursor, SessionInfo, StoredMessage, StoredResponse, TurnRecord, WebhookEvent,
};
use crate::retention::Sweep;

/// Durable conversations.
#[async_trait]
pub trait ConversationStore: Send + Sync + Debug {
    /// Returns the session, creating it empty if it does not exist.
    async fn ensure_session(&self, id: &SessionId) -> Result<SessionInfo, StorageError>;

    async fn session(&self, id: &SessionId) -> Result<Option<SessionInfo>, StorageError>;

    /// Opens a session for a turn, in one round trip where the backend can: creates it empty if
    /// it does not exist, reads its last `limit` messages, and names its active run.
    async fn open_session(
        &self,
        id: &SessionId,
        limit: usize,
    ) -> Result<OpenedSession, StorageError>;

    /// The last `limit` messages in order (`limit` is capped at [`crate::MAX_HISTORY_WINDOW`]).
    async fn recent_messages(
        &self,
        id: &SessionId,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StorageError>;

    /// Stores a whole turn atomically, numbering its messages from `expected_next_sequence`,
    /// which must be the session's current `next_sequence` (else [`StorageError::Conflict`]).
    /// A first turn (`expected_next_sequence` 0) creates its session if it does not exist, in
    /// the same atomic step; a later one on a missing session is
    /// [`StorageError::SessionNotFound`].
    async fn append_turn(
        &self,
        id: &SessionId,
        expected_next_sequence: u64,
        turn: &Turn,
    ) -> Result<SessionInfo, StorageError>;

    /// [`append_turn`](Self::append_turn) that also writes `record` in the same atomic step: an
    /// idempotency claim completed with the turn's response (so a crash between the two cannot
    /// let a retry run the turn again), a response record kept under its id, and the completion
    /// of the turn's run: with a run that is no longer in progress nothing is written
    /// ([`StorageError::RunEnded`]). Answers whether
    /// the claim was completed with the turn; a store that keeps idempotency records elsewhere
    /// answers false (the caller then completes the claim itself).
    async fn append_turn_recording(
        &self,
        id: &SessionId,
        expected_next_sequence: u64,
        turn: &Turn,
        record: TurnRecord<'_>,
    ) -> Result<(SessionInfo, bool), StorageError>;

    /// The response record kept under `id`, if any (whoever's: the caller checks the owner).
    async fn response(&self, id: &str) -> Result<Option<StoredResponse>, StorageError>;

    /// Deletes the session, its messages and its runs; answers whether it existed. A session
    /// with an active run is not deleted ([`StorageError::SessionBusy`]).
    async fn delete_session(&self, id: &SessionId) -> Result<bool, StorageError>;

    /// Stored turns and their tokens per caller per UTC day, from `from` to `to` inclusive, for
    /// `owner` only or every caller; ordered by day, then caller. Counted with each turn, in the
    /// same atomic step.
    async fn usage(
        &self,
        owner: Option<&str>,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> Result<Vec<DailyUsage>, StorageError>;

    /// Tokens `owner`'s turns used on `day` (UTC): what a daily quota is checked against, once
    /// per turn. Backends override it with one lean query.
    async fn tokens_used(&self, owner: &str, day: chrono::NaiveDate) -> Result<u64, StorageError> {
        let rows = self.usage(Some(owner), day, day).await?;
        Ok(rows.iter().map(|row| row.usage.total()).sum())
    }

    /// Counts a turn that stored no messages (a stateless turn of the OpenAI-compatible API) in
    /// `owner`'s usage of today (UTC), as a stored turn counts itself; with `run`, completes that
    /// run in the same atomic step, and counts nothing if it is no longer in progress
    /// ([`StorageError::RunEnded`]).
    async fn count_usage(
        &self,
        owner: &str,
        agent: Option<&str>,
        usage: TokenUsage,
        run: Option<RunCompletion<'_>>,
    ) -> Result<(), StorageError>;

    /// One batch of the retention sweep: deletes, with their messages, up to `limit` sessions
    /// whose last turn was stored (or that were created, if none was) before `idle_before`,
    /// oldest first. Each is locked in `locks` first, without waiting: one with a turn in
    /// progress is skipped (counted `busy`), and so is one with an active run. None when another
    /// replica is sweeping (Postgres: an advisory lock held for the batch). Usage counts are
    /// kept. Runs are deleted with their session, and finished runs of sessions that never came
    /// to exist (a failed first turn) once they finished before `idle_before`.
    async fn sweep_idle(
        &self,
        idle_before: SystemTime,
        limit: usize,
        locks: &Arc<dyn SessionLocks>,
    ) -> Result<Option<Sweep>, StorageError>;

    /// Up to `limit` sessions of `owner` ([`SessionId::owner`]), newest created first (ties by id,
    /// descending), after `after` when given.
    async fn list_sessions(
        &self,
        owner: &str,
        after: Option<&SessionCursor>,
        limit: usize,
    ) -> Result<Vec<SessionInfo>, StorageError>;
}

/// Runs: the record of every turn from its start to its end, kept in the conversation store (a
/// completed run's state is written by its turn's store, see [`TurnRecord::run`]).
#[async_trait]
pub trait RunStore: Send + Sync + Debug {
    /// Records `run` as in progress, leased to its holder. When its session has an active run,
    /// answers [`StorageError::SessionBusy`] naming it, unless that run's lease has expired (its
    /// executor is gone): that run is first failed as [`crate::RUN_LOST`].
    async fn start_run(&self, run: NewRun<'_>) -> Result<RunRecord, StorageError>;

    /// Ends an active run without a stored turn (failed or cancelled).
    async fn end_run(&self, id: &str, end: RunEnd<'_>) -> Result<Ended, StorageError>;

    /// Records runs that started earlier and have no record yet, in progress and leased to
    /// their holder, in one step; answers the ids it recorded. A run that has a record already,
    /// or whose session has another active run, is skipped.
    async fn record_runs(&self, runs: &[NewRun<'_>]) -> Result<Vec<String>, StorageError>;

    /// Ends `run` as [`end_run`](Self::end_run) does, recording it ended if the store has no
    /// record of it yet.
    async fn record_run_end(&self, run: NewRun<'_>, end: RunEnd<'_>)
    -> Result<Ended, StorageError>;

    /// Stops `run` to wait for the client ([`crate::RunStatus::RequiresAction`]): its executor
    /// lets go of it (no lease), `pending` (opaque: everything needed to continue it) is kept
    /// with it until it is answered or `expires_at`, and it stays its session's active run. A
    /// run with no record yet is recorded waiting. A run no longer in progress is
    /// [`StorageError::RunEnded`] (nothing written).
    async fn suspend_run(
        &self,
        run: NewRun<'_>,
        pending: &str,
        expires_at: SystemTime,
    ) -> Result<RunRecord, StorageError>;

    /// Writes `answer` to a waiting run if it is still waiting at the version the answer was
    /// made from ([`crate::RunRecord::actions`]): its pending state replaced (answered in part),
    /// or, resumed, in progress again and leased (its pending state dropped: the resumer has
    /// it). Of two answers made from one version, one is written.
    async fn answer_run(&self, answer: RunAnswer<'_>) -> Result<Answered, StorageError>;

    /// Fails as [`crate::ACTION_EXPIRED`] up to `limit` waiting runs whose wait expired; answers
    /// them.
    async fn expire_actions(&self, limit: usize) -> Result<Vec<RunRecord>, StorageError>;

    /// Clears the way for a turn on `session`, whose active run (see
    /// [`ConversationStore::open_session`]) is not the turn's: [`StorageError::SessionBusy`]
    /// naming it, unless its lease has expired (its executor is gone) and it is failed as
    /// [`crate::RUN_LOST`]. No active run (it ended meanwhile) clears the way too.
    async fn settle_session(&self, session: &SessionId) -> Result<(), StorageError>;

    /// Queues a background run, refused as [`start_run`](Self::start_run) refuses (its
    /// session's active run), or with [`StorageError::QueueFull`] past its caps.
    async fn enqueue_run(&self, run: QueuedRun<'_>) -> Result<RunRecord, StorageError>;

    /// Takes the oldest queued run, if any: in progress from now, leased to `holder` for
    /// `lease`, with its input. Each queued run is taken once, whichever replicas ask.
    async fn claim_run(
        &self,
        holder: &str,
        lease: Duration,
    ) -> Result<Option<ClaimedRun>, StorageError>;

    /// The input a background run was queued with (none for another run).
    async fn run_input(&self, id: &str) -> Result<Option<String>, StorageError>;

    /// Extends by `lease` the leases `holder` holds on the runs `ids` (a store may skip those
    /// with more than half a lease left); answers those still in progress and held by it (the
    /// others were ended elsewhere: cancelled, or failed as lost).
    async fn renew_leases(
        &self,
        holder: &str,
        ids: &[String],
        lease: Duration,
    ) -> Result<Vec<String>, StorageError>;

    /// Fails as [`crate::RUN_LOST`] up to `limit` runs in progress whose lease expired more than
    /// `grace` ago (their executor is gone), except `holder`'s; answers them.
    async fn fail_lost_runs(
        &self,
        holder: &str,
        grace: Duration,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StorageError>;

    /// The run `id`, whoever's (the caller checks the owner).
    async fn run(&self, id: &str) -> Result<Option<RunRecord>, StorageError>;

    /// Up to `limit` runs of `session`, newest created first (ties by id, descending), after
    /// `after` when given.
    async fn session_runs(
        &self,
        session: &SessionId,
        after: Option<&RunCursor>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StorageError>;
}

/// The webhook events of background runs' terminal states: written by the statements that end
/// the runs (an outbox), taken by each replica's sender, each attempt recorded.
#[async_trait]
pub trait WebhookOutbox: Send + Sync + Debug {
    /// Up to `limit` events due for delivery, soonest first, each held for `hold` (no other
    /// sender takes it meanwhile).
    async fn due_webhook_events(
        &self,
        limit: usize,
        hold: Duration,
    ) -> Result<Vec<WebhookEvent>, StorageError>;

    /// Records an attempt at event `id`: the endpoints that have acknowledged it so far, and
    /// when to try again (`None`: it is finished, delivered everywhere or given up).
    async fn webhook_attempted(
        &self,
        id: &str,
        delivered_to: &[String],
        retry_in: Option<Duration>,
    ) -> Result<(), StorageError>;

    /// Deletes the events finished before `before`; answers how many.
    async fn purge_webhook_events(&self, before: SystemTime) -> Result<usize, StorageError>;
}

/// The ordered events of each run, readable by every replica and kept a while after the run
/// ends; losing them loses live resumption, never a run's result (that is the run's record).
#[async_trait]
pub trait EventLog: Send + Sync + Debug {
    /// Appends `events` (numbered by their writer, increasing; an event whose number the log
    /// already holds is skipped, so a retried append is harmless) to `run`'s log, which keeps
    /// its last `cap` events and expires `keep` after this append.
    async fn append(
        &self,
        run: &str,
        events: &[LoggedEvent],
        cap: usize,
        keep: Duration,
    ) -> Result<(), StorageError>;

    /// Up to `limit` events of `run` numbered after `after` (from the first when None), in
    /// order; none when the log is empty, expired or was never written.
    async fn read(
        &self,
        run: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, StorageError>;
}

/// Per-session mutual exclusion across replicas. Use [`crate::acquire_lock`] to wait for one.
#[async_trait]
pub trait SessionLocks: Send + Sync + Debug {
    /// Takes the lock if it is free; it expires after `ttl` if never released.
    async fn try_acquire(
        &self,
        session: &SessionId,
        ttl: Duration,
    ) -> Result<Option<LockLease>, StorageError>;

    /// Releases the lock if `lease` still owns it; answers whether it did.
    async fn release(&self, lease: &LockLease) -> Result<bool, StorageError>;

    /// Where releases that cannot run now (a dropped guard, a failed release, an acquire whose
    /// answer was lost) are retried, within a fixed number of slots.
    fn background(&self) -> &BackgroundWork;
}

/// Counts requests per key in fixed windows, atomically across replicas.
#[async_trait]
pub trait RateLimiter: Send + Sync + Debug {
    /// Counts one request for `key` and answers whether it is within `limit` per `window`.
    async fn check(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
    ) -> Result<RateDecision, StorageError>;
}

/// Records of requests made with an `Idempotency-Key`.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + Debug {
    /// Claims `key` for a request whose body hashes to `fingerprint`. A claim that is neither
    /// completed nor abandoned lapses after `lease`, so a crashed request does not block retries.
    async fn begin(
        &self,
        key: &str,
        fingerprint: &str,
        lease: Duration,
    ) -> Result<IdempotencyBegin, StorageError>;

    /// Stores the response of a claimed key, kept for `retention`.
    async fn complete(
        &self,
        key: &str,
        response: &str,
        retention: Duration,
    ) -> Result<(), StorageError>;

    /// Drops an uncompleted claim (the request failed), so a retry runs again.
    async fn abandon(&self, key: &str) -> Result<(), StorageError>;
}
