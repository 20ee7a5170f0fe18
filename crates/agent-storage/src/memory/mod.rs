//! In-memory implementations of every storage trait, for the embedded default and fast tests.
//! Data lives as long as the value; nothing is shared between processes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use agent_core::{SessionId, TokenUsage, Turn};
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};

use crate::background::BackgroundWork;
use crate::error::StorageError;
use crate::model::{
    Answered, ClaimedRun, DailyUsage, Ended, IdempotencyBegin, LockLease, LoggedEvent, NewRun,
    OpenedSession, QueuedRun, RateDecision, RunAnswer, RunCompletion, RunCursor, RunEnd, RunRecord,
    SessionCursor, SessionInfo, SessionSummary, StoredMessage, StoredResponse, SummaryRecord,
    TurnRecord, WebhookEvent,
};
use crate::retention::{Sweep, SweepLocks};
use crate::traits::{
    ConversationStore, EventLog, IdempotencyStore, RateLimiter, RunStore, SessionLocks,
    WebhookOutbox,
};

mod runs;

/// A caller's day of one agent ('' when none): the key of its usage.
type UsageKey = (String, NaiveDate, String);

/// All five stores in one value. Where two of its maps are locked together, `runs` is locked
/// first.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    runs: Mutex<runs::RunTable>,
    sessions: Mutex<HashMap<SessionId, Session>>,
    locks: Mutex<HashMap<SessionId, HeldLock>>,
    fencing: Mutex<HashMap<SessionId, u64>>,
    windows: Mutex<HashMap<String, Window>>,
    idempotency: Mutex<HashMap<String, Record>>,
    /// Runs' event logs, by run id.
    logs: Mutex<HashMap<String, EventLogEntry>>,
    /// Response objects by id.
    responses: Mutex<HashMap<String, StoredResponse>>,
    /// Turns and tokens per (caller, UTC day, agent).
    usage: Mutex<HashMap<UsageKey, (u64, TokenUsage)>>,
    background: Arc<BackgroundWork>,
}

#[derive(Debug)]
struct Session {
    info: SessionInfo,
    messages: Vec<StoredMessage>,
}

impl Session {
    fn empty(id: &SessionId) -> Self {
        Self {
            info: SessionInfo::empty(id.clone(), SystemTime::now()),
            messages: Vec::new(),
        }
    }
}

#[derive(Debug)]
struct EventLogEntry {
    events: std::collections::VecDeque<LoggedEvent>,
    expires: Instant,
}

#[derive(Debug)]
struct HeldLock {
    owner: String,
    expires: Instant,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    count: u32,
}

#[derive(Debug)]
struct Record {
    fingerprint: String,
    response: Option<String>,
    expires: Instant,
}

/// A poisoned lock only means another thread panicked mid-update of plain data; keep going.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryStorage {
    /// Adds a turn of `agent` and its tokens to `owner`'s usage of the UTC day of `at`.
    fn count(&self, owner: &str, agent: Option<&str>, at: SystemTime, tokens: TokenUsage) {
        let day = DateTime::<Utc>::from(at).date_naive();
        let mut usage = lock(&self.usage);
        let key = (owner.to_owned(), day, agent.unwrap_or_default().to_owned());
        let counted = usage.entry(key).or_default();
        counted.0 += 1;
        counted.1 += tokens;
    }

    /// Stores a turn (see [`ConversationStore::append_turn`]).
    fn append(
        &self,
        id: &SessionId,
        expected_next_sequence: u64,
        turn: &Turn,
        agent: Option<&str>,
        summary: Option<SummaryRecord<'_>>,
    ) -> Result<SessionInfo, StorageError> {
        let mut sessions = lock(&self.sessions);
        if expected_next_sequence == 0 && !sessions.contains_key(id) {
            sessions.insert(id.clone(), Session::empty(id));
        }
        let session = sessions
            .get_mut(id)
            .ok_or_else(|| StorageError::SessionNotFound(id.to_string()))?;
        if session.info.next_sequence != expected_next_sequence {
            return Err(StorageError::Conflict {
                session: id.to_string(),
                expected: expected_next_sequence,
                actual: session.info.next_sequence,
            });
        }
        let now = SystemTime::now();
        let last = turn.messages.len().saturating_sub(1);
        for (index, message) in turn.messages.iter().enumerate() {
            session.messages.push(StoredMessage {
                sequence: expected_next_sequence + index as u64,
                message: message.clone(),
                tokens: (index == last).then(|| turn.usage.total()),
                created_at: now,
                context_tokens: turn.context_tokens.get(index).copied(),
            });
        }
        let info = &mut session.info;
        info.next_sequence += turn.messages.len() as u64;
        info.turn_count += 1;
        info.usage += turn.usage;
        info.updated_at = now;
        if info.agent.is_none() {
            info.agent = agent.map(str::to_owned);
        }
        if let Some(summary) = summary {
            info.summary = Some(SessionSummary {
                text: summary.text.to_owned(),
                through: summary.through,
            });
        }
        let info = info.clone();
        self.count(id.owner(), agent, now, turn.usage);
        Ok(info)
    }

    pub fn new() -> Self {
        Self::default()
    }

    /// Runs background lock releases (of dropped guards) in `work` instead of slots of its own.
    #[must_use]
    pub fn with_background(mut self, work: Arc<BackgroundWork>) -> Self {
        self.background = work;
        self
    }
}

#[async_trait]
impl ConversationStore for MemoryStorage {
    async fn ensure_session(&self, id: &SessionId) -> Result<SessionInfo, StorageError> {
        let mut sessions = lock(&self.sessions);
        let session = sessions
            .entry(id.clone())
            .or_insert_with(|| Session::empty(id));
        Ok(session.info.clone())
    }

    async fn session(&self, id: &SessionId) -> Result<Option<SessionInfo>, StorageError> {
        Ok(lock(&self.sessions)
            .get(id)
            .map(|session| session.info.clone()))
    }

    async fn open_session(
        &self,
        id: &SessionId,
        limit: usize,
    ) -> Result<OpenedSession, StorageError> {
        let info = self.ensure_session(id).await?;
        let messages = self.recent_messages(id, limit).await?;
        let active_run = lock(&self.runs).active(id).cloned();
        Ok(OpenedSession {
            info,
            messages,
            active_run,
        })
    }

    async fn recent_messages(
        &self,
        id: &SessionId,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StorageError> {
        let sessions = lock(&self.sessions);
        let Some(session) = sessions.get(id) else {
            return Ok(Vec::new());
        };
        let limit = limit.min(crate::MAX_HISTORY_WINDOW);
        let start = session.messages.len().saturating_sub(limit);
        Ok(session.messages[start..].to_vec())
    }

    async fn append_turn(
        &self,
        id: &SessionId,
        expected_next_sequence: u64,
        turn: &Turn,
    ) -> Result<SessionInfo, StorageError> {
        self.append(id, expected_next_sequence, turn, None, None)
    }

    async fn count_usage(
        &self,
        owner: &str,
        agent: Option<&str>,
        usage: TokenUsage,
        run: Option<RunCompletion<'_>>,
    ) -> Result<(), StorageError> {
        let mut runs = lock(&self.runs);
        runs.check_in_progress(run)?;
        self.count(owner, agent, SystemTime::now(), usage);
        runs.complete(run, None, usage);
        Ok(())
    }

    async fn append_turn_recording(
        &self,
        id: &SessionId,
        expected_next_sequence: u64,
        turn: &Turn,
        record: TurnRecord<'_>,
    ) -> Result<(SessionInfo, bool), StorageError> {
        let mut runs = lock(&self.runs);
        runs.check_in_progress(record.run)?;
        let info = self.append(
            id,
            expected_next_sequence,
            turn,
            record.agent,
            record.summary,
        )?;
        runs.complete(record.run, Some(id), turn.usage);
        drop(runs);
        if let Some(response) = record.response {
            lock(&self.responses).insert(
                response.id.to_owned(),
                StoredResponse {
                    id: response.id.to_owned(),
                    session: id.clone(),
                    sequence: info.next_sequence,
                    created_at: response.created_at,
                    parameters: response.parameters.clone(),
                    output_text: response.output_text.to_owned(),
                    usage: turn.usage,
                },
            );
        }
        // Idempotency records live in the idempotency store: the caller completes the claim.
        Ok((info, false))
    }

    async fn response(&self, id: &str) -> Result<Option<StoredResponse>, StorageError> {
        let response = lock(&self.responses).get(id).cloned();
        // Deleted with its session, as in Postgres.
        Ok(response.filter(|response| lock(&self.sessions).contains_key(&response.session)))
    }

    async fn delete_session(&self, id: &SessionId) -> Result<bool, StorageError> {
        let mut runs = lock(&self.runs);
        if let Some(active) = runs.active(id) {
            return Err(StorageError::SessionBusy {
                session: id.to_string(),
                run: active.clone(),
            });
        }
        runs.delete_session(id);
        let existed = lock(&self.sessions).remove(id).is_some();
        drop(runs);
        lock(&self.responses).retain(|_, response| response.session != *id);
        Ok(existed)
    }

    async fn sweep_idle(
        &self,
        idle_before: SystemTime,
        limit: usize,
        locks: &Arc<dyn SessionLocks>,
    ) -> Result<Option<Sweep>, StorageError> {
        let idle = |session: &Session| session.info.updated_at < idle_before;
        let candidates: Vec<SessionId> = {
            let runs = lock(&self.runs);
            let sessions = lock(&self.sessions);
            // A session with an active run is not idle, however old its last turn.
            let mut idle: Vec<&Session> = sessions
                .values()
                .filter(|session| idle(session) && runs.active(&session.info.id).is_none())
                .collect();
            idle.sort_by_key(|session| session.info.updated_at);
            idle.iter()
                .take(limit)
                .map(|session| session.info.id.clone())
                .collect()
        };
        let found = candidates.len();
        let held = SweepLocks::take(locks, candidates).await?;
        let mut deleted = 0;
        {
            let mut runs = lock(&self.runs);
            let mut sessions = lock(&self.sessions);
            for id in held.sessions() {
                if runs.active(id).is_some() {
                    continue;
                }
                // Still idle: a turn may have been stored since the candidates were read.
                if sessions.get(id).is_some_and(idle) {
                    sessions.remove(id);
                    runs.delete_session(id);
                    deleted += 1;
                }
            }
            runs.sweep_orphans(idle_before, |session| sessions.contains_key(session));
        }
        let busy = held.busy;
        held.release().await;
        Ok(Some(Sweep {
            candidates: found,
            deleted,
            busy,
        }))
    }

    async fn usage(
        &self,
        owner: Option<&str>,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<DailyUsage>, StorageError> {
        let usage = lock(&self.usage);
        let mut rows: Vec<DailyUsage> = usage
            .iter()
            .filter(|((who, day, _), _)| {
                owner.is_none_or(|owner| owner == who) && (from..=to).contains(day)
            })
            .map(|((who, day, agent), (turns, tokens))| DailyUsage {
                owner: who.clone(),
                day: *day,
                agent: Some(agent.clone()).filter(|agent| !agent.is_empty()),
                turns: *turns,
                usage: *tokens,
            })
            .collect();
        rows.sort_by(|a, b| (a.day, &a.owner, &a.agent).cmp(&(b.day, &b.owner, &b.agent)));
        Ok(rows)
    }

    async fn list_sessions(
        &self,
        owner: &str,
        after: Option<&SessionCursor>,
        limit: usize,
    ) -> Result<Vec<SessionInfo>, StorageError> {
        let sessions = lock(&self.sessions);
        let mut listed: Vec<SessionInfo> = sessions
            .values()
            .map(|session| &session.info)
            .filter(|info| info.id.owner() == owner)
            .filter(|info| after.is_none_or(|cursor| info.is_after(cursor)))
            .cloned()
            .collect();
        listed.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        listed.truncate(limit);
        Ok(listed)
    }
}

#[async_trait]
impl RunStore for MemoryStorage {
    async fn start_run(&self, run: NewRun<'_>) -> Result<RunRecord, StorageError> {
        lock(&self.runs).start(run)
    }

    async fn end_run(&self, id: &str, end: RunEnd<'_>) -> Result<Ended, StorageError> {
        Ok(lock(&self.runs).end(id, end))
    }

    async fn record_runs(&self, runs: &[NewRun<'_>]) -> Result<Vec<String>, StorageError> {
        Ok(lock(&self.runs).record(runs))
    }

    async fn record_run_end(
        &self,
        run: NewRun<'_>,
        end: RunEnd<'_>,
    ) -> Result<Ended, StorageError> {
        Ok(lock(&self.runs).record_end(run, end))
    }

    async fn suspend_run(
        &self,
        run: NewRun<'_>,
        pending: &str,
        expires_at: SystemTime,
    ) -> Result<RunRecord, StorageError> {
        lock(&self.runs).suspend(run, pending, expires_at)
    }

    async fn answer_run(&self, answer: RunAnswer<'_>) -> Result<Answered, StorageError> {
        Ok(lock(&self.runs).answer(answer))
    }

    async fn expire_actions(&self, limit: usize) -> Result<Vec<RunRecord>, StorageError> {
        Ok(lock(&self.runs).expire(limit))
    }

    async fn settle_session(&self, session: &SessionId) -> Result<(), StorageError> {
        lock(&self.runs).settle(session)
    }

    async fn enqueue_run(&self, run: QueuedRun<'_>) -> Result<RunRecord, StorageError> {
        lock(&self.runs).enqueue(run)
    }

    async fn claim_run(
        &self,
        holder: &str,
        lease: Duration,
    ) -> Result<Option<ClaimedRun>, StorageError> {
        Ok(lock(&self.runs).claim(holder, lease))
    }

    async fn run_input(&self, id: &str) -> Result<Option<String>, StorageError> {
        Ok(lock(&self.runs).input(id))
    }

    async fn renew_leases(
        &self,
        holder: &str,
        ids: &[String],
        lease: Duration,
    ) -> Result<Vec<String>, StorageError> {
        Ok(lock(&self.runs).renew(holder, ids, lease))
    }

    async fn fail_lost_runs(
        &self,
        holder: &str,
        grace: Duration,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StorageError> {
        Ok(lock(&self.runs).fail_lost(holder, grace, limit))
    }

    async fn run(&self, id: &str) -> Result<Option<RunRecord>, StorageError> {
        Ok(lock(&self.runs).get(id))
    }

    async fn session_runs(
        &self,
        session: &SessionId,
        after: Option<&RunCursor>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StorageError> {
        Ok(lock(&self.runs).of_session(session, after, limit))
    }
}

#[async_trait]
impl WebhookOutbox for MemoryStorage {
    async fn due_webhook_events(
        &self,
        limit: usize,
        hold: Duration,
    ) -> Result<Vec<WebhookEvent>, StorageError> {
        Ok(lock(&self.runs).due_webhooks(limit, hold))
    }

    async fn webhook_attempted(
        &self,
        id: &str,
        delivered_to: &[String],
        retry_in: Option<Duration>,
    ) -> Result<(), StorageError> {
        lock(&self.runs).webhook_attempted(id, delivered_to, retry_in);
        Ok(())
    }

    async fn purge_webhook_events(&self, before: SystemTime) -> Result<usize, StorageError> {
        Ok(lock(&self.runs).purge_webhooks(before))
    }
}

#[async_trait]
impl EventLog for MemoryStorage {
    async fn append(
        &self,
        run: &str,
        events: &[LoggedEvent],
        cap: usize,
        keep: Duration,
    ) -> Result<(), StorageError> {
        let mut logs = lock(&self.logs);
        let now = Instant::now();
        // Expired logs go now and then, so the map stays bounded by the logs kept.
        if logs.len() > 1024 && logs.len().is_power_of_two() {
            logs.retain(|_, log| log.expires > now);
        }
        let log = logs.entry(run.to_owned()).or_insert_with(|| EventLogEntry {
            events: std::collections::VecDeque::new(),
            expires: now,
        });
        if log.expires <= now {
            log.events.clear();
        }
        for event in events {
            if log.events.back().is_none_or(|last| last.seq < event.seq) {
                log.events.push_back(event.clone());
            }
        }
        while log.events.len() > cap {
            log.events.pop_front();
        }
        log.expires = now + keep;
        Ok(())
    }

    async fn read(
        &self,
        run: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, StorageError> {
        let logs = lock(&self.logs);
        let Some(log) = logs.get(run).filter(|log| log.expires > Instant::now()) else {
            return Ok(Vec::new());
        };
        Ok(log
            .events
            .iter()
            .filter(|event| after.is_none_or(|after| event.seq > after))
            .take(limit)
            .cloned()
            .collect())
    }
}

#[async_trait]
impl SessionLocks for MemoryStorage {
    async fn try_acquire(
        &self,
        session: &SessionId,
        ttl: Duration,
    ) -> Result<Option<LockLease>, StorageError> {
        let mut locks = lock(&self.locks);
        let now = Instant::now();
        if locks.get(session).is_some_and(|held| held.expires > now) {
            return Ok(None);
        }
        let owner = uuid::Uuid::new_v4().to_string();
        locks.insert(
            session.clone(),
            HeldLock {
                owner: owner.clone(),
                expires: now + ttl,
            },
        );
        let mut fencing = lock(&self.fencing);
        let token = fencing.entry(session.clone()).or_insert(0);
        *token += 1;
        Ok(Some(LockLease {
            session: session.clone(),
            owner,
            fencing_token: *token,
            ttl,
        }))
    }

    async fn release(&self, lease: &LockLease) -> Result<bool, StorageError> {
        let mut locks = lock(&self.locks);
        let owned = locks
            .get(&lease.session)
            .is_some_and(|held| held.owner == lease.owner && held.expires > Instant::now());
        if owned {
            locks.remove(&lease.session);
        }
        Ok(owned)
    }

    fn background(&self) -> &BackgroundWork {
        &self.background
    }
}

#[async_trait]
impl RateLimiter for MemoryStorage {
    async fn check(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
    ) -> Result<RateDecision, StorageError> {
        let mut windows = lock(&self.windows);
        let now = Instant::now();
        // Drop finished windows now and then so the map stays bounded by active keys.
        if windows.len() > 10_000 {
            windows.retain(|_, counted| now.duration_since(counted.started) < window);
        }
        let counted = windows.entry(key.to_owned()).or_insert(Window {
            started: now,
            count: 0,
        });
        if now.duration_since(counted.started) >= window {
            *counted = Window {
                started: now,
                count: 0,
            };
        }
        counted.count += 1;
        if counted.count <= limit {
            Ok(RateDecision::Allowed {
                remaining: limit - counted.count,
            })
        } else {
            let retry_after = window.saturating_sub(now.duration_since(counted.started));
            Ok(RateDecision::Limited { retry_after })
        }
    }
}

#[async_trait]
impl IdempotencyStore for MemoryStorage {
    async fn begin(
        &self,
        key: &str,
        fingerprint: &str,
        lease: Duration,
    ) -> Result<IdempotencyBegin, StorageError> {
        let mut records = lock(&self.idempotency);
        let now = Instant::now();
        match records.get(key) {
            Some(record) if record.expires > now => Ok(if record.fingerprint != fingerprint {
                IdempotencyBegin::Mismatch
            } else if let Some(response) = &record.response {
                IdempotencyBegin::Completed(response.clone())
            } else {
                IdempotencyBegin::InProgress
            }),
            _ => {
                let record = Record {
                    fingerprint: fingerprint.to_owned(),
                    response: None,
                    expires: now + lease,
                };
                records.insert(key.to_owned(), record);
                Ok(IdempotencyBegin::Started)
            }
        }
    }

    async fn complete(
        &self,
        key: &str,
        response: &str,
        retention: Duration,
    ) -> Result<(), StorageError> {
        if let Some(record) = lock(&self.idempotency).get_mut(key) {
            record.response = Some(response.to_owned());
            record.expires = Instant::now() + retention;
        }
        Ok(())
    }

    async fn abandon(&self, key: &str) -> Result<(), StorageError> {
        let mut records = lock(&self.idempotency);
        if records
            .get(key)
            .is_some_and(|record| record.response.is_none())
        {
            records.remove(key);
        }
        Ok(())
    }
}
