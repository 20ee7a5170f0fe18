//! The in-memory run table: runs by id, the active run of each session, each session's runs in
//! the order they started, and the queue of background runs.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use agent_core::{SessionId, TokenUsage};

use crate::error::StorageError;
use crate::model::{
    Answered, ClaimedRun, EXPIRED, Ended, NewRun, QueuedRun, RUN_LOST, RunAction, RunAnswer,
    RunCompletion, RunCursor, RunEnd, RunRecord, RunStatus, WebhookEvent,
};

/// What a run lost by its executor says.
const LOST: RunEnd<'static> = RunEnd::Failed {
    code: RUN_LOST,
    message: "the run's executor stopped renewing its lease (its replica is gone)",
};

#[derive(Debug, Default)]
pub(super) struct RunTable {
    runs: HashMap<String, RunRecord>,
    /// The active run of each session that has one.
    active: HashMap<SessionId, String>,
    /// Each session's runs, oldest first.
    by_session: HashMap<SessionId, Vec<String>>,
    /// Who executes each run in progress.
    holders: HashMap<String, String>,
    /// Queued runs, oldest first (a run ended while queued is skipped when reached).
    queue: VecDeque<String>,
    /// Each background run's input.
    inputs: HashMap<String, String>,
    /// The webhook events of background runs' terminal states (see `WebhookOutbox`).
    webhooks: Vec<OutboxEntry>,
    /// The last version given to a waiting run's action (they never come back).
    versions: u64,
}

#[derive(Debug)]
struct OutboxEntry {
    event: WebhookEvent,
    next_attempt: SystemTime,
    finished_at: Option<SystemTime>,
}

impl RunTable {
    /// Refuses a new run on `session` while it has an active run, unless that run's lease has
    /// expired (it is failed as lost first).
    fn check_session(&mut self, session: Option<&SessionId>) -> Result<(), StorageError> {
        let now = SystemTime::now();
        if let Some(session) = session
            && let Some(active) = self.active.get(session).cloned()
        {
            let expired = self.runs.get(&active).is_none_or(|record| {
                record
                    .lease_expires_at
                    .is_some_and(|expires| expires <= now)
            });
            if !expired {
                return Err(StorageError::SessionBusy {
                    session: session.to_string(),
                    run: active,
                });
            }
            self.end(&active, LOST);
        }
        Ok(())
    }

    /// Clears the way for a turn on `session` (see [`crate::RunStore::settle_session`]).
    pub(super) fn settle(&mut self, session: &SessionId) -> Result<(), StorageError> {
        self.check_session(Some(session))
    }

    /// Records the runs of `runs` that have no record and whose session has no active run.
    pub(super) fn record(&mut self, runs: &[NewRun<'_>]) -> Vec<String> {
        let mut recorded = Vec::new();
        for run in runs {
            let busy = run
                .session
                .is_some_and(|session| self.active.contains_key(session));
            if !busy
                && !self.runs.contains_key(run.id)
                && let Ok(record) = self.start(*run)
            {
                recorded.push(record.id);
            }
        }
        recorded
    }

    /// Ends `run`, recording it ended if it has no record.
    pub(super) fn record_end(&mut self, run: NewRun<'_>, end: RunEnd<'_>) -> Ended {
        if self.runs.contains_key(run.id) {
            return self.end(run.id, end);
        }
        let mut record = Self::record_of(&run, end.status());
        record.error = Some(end.error());
        Self::finish(&mut record);
        self.insert(record.clone());
        Ended::Now(record)
    }

    /// The record of `run` with `status`, started at its start.
    fn record_of(run: &NewRun<'_>, status: RunStatus) -> RunRecord {
        RunRecord {
            id: run.id.to_owned(),
            owner: run.owner.to_owned(),
            session: run.session.cloned(),
            status,
            background: run.background,
            created_at: run.started_at,
            started_at: Some(run.started_at),
            finished_at: None,
            error: None,
            output_text: None,
            usage: TokenUsage::default(),
            lease_expires_at: None,
            action: None,
        }
    }

    pub(super) fn start(&mut self, run: NewRun<'_>) -> Result<RunRecord, StorageError> {
        let now = SystemTime::now();
        self.check_session(run.session)?;
        if self.runs.contains_key(run.id) {
            return Err(StorageError::Corrupt(format!("run {} exists", run.id)));
        }
        self.holders
            .insert(run.id.to_owned(), run.holder.to_owned());
        let record = RunRecord {
            lease_expires_at: Some(now + run.lease),
            ..Self::record_of(&run, RunStatus::InProgress)
        };
        self.insert(record.clone());
        Ok(record)
    }

    fn insert(&mut self, record: RunRecord) {
        if let Some(session) = &record.session {
            if record.status.is_active() {
                self.active.insert(session.clone(), record.id.clone());
            }
            self.by_session
                .entry(session.clone())
                .or_default()
                .push(record.id.clone());
        }
        self.runs.insert(record.id.clone(), record);
    }

    pub(super) fn enqueue(&mut self, run: QueuedRun<'_>) -> Result<RunRecord, StorageError> {
        self.check_session(run.session)?;
        let queued: Vec<&RunRecord> = self
            .queue
            .iter()
            .filter_map(|id| self.runs.get(id))
            .filter(|record| record.status == RunStatus::Queued)
            .collect();
        let mine = queued
            .iter()
            .filter(|record| record.owner == run.owner)
            .count();
        if mine >= run.max_per_owner {
            return Err(StorageError::QueueFull {
                per_owner: true,
                queued: mine,
            });
        }
        if queued.len() >= run.max_total {
            return Err(StorageError::QueueFull {
                per_owner: false,
                queued: queued.len(),
            });
        }
        if self.runs.contains_key(run.id) {
            return Err(StorageError::Corrupt(format!("run {} exists", run.id)));
        }
        let record = RunRecord {
            id: run.id.to_owned(),
            owner: run.owner.to_owned(),
            session: run.session.cloned(),
            status: RunStatus::Queued,
            background: true,
            created_at: SystemTime::now(),
            started_at: None,
            finished_at: None,
            error: None,
            output_text: None,
            usage: TokenUsage::default(),
            lease_expires_at: None,
            action: None,
        };
        self.queue.push_back(run.id.to_owned());
        self.inputs.insert(run.id.to_owned(), run.input.to_owned());
        self.insert(record.clone());
        Ok(record)
    }

    pub(super) fn claim(&mut self, holder: &str, lease: Duration) -> Option<ClaimedRun> {
        while let Some(id) = self.queue.pop_front() {
            let input = self.inputs.get(&id).cloned();
            let Some(record) = self.runs.get_mut(&id) else {
                continue;
            };
            if record.status != RunStatus::Queued {
                continue;
            }
            let now = SystemTime::now();
            record.status = RunStatus::InProgress;
            record.started_at = Some(now);
            record.lease_expires_at = Some(now + lease);
            self.holders.insert(id, holder.to_owned());
            return Some(ClaimedRun {
                record: record.clone(),
                input: input.unwrap_or_default(),
            });
        }
        None
    }

    pub(super) fn renew(&mut self, holder: &str, ids: &[String], lease: Duration) -> Vec<String> {
        let until = SystemTime::now() + lease;
        ids.iter()
            .filter(|id| self.holders.get(*id).is_some_and(|held| held == holder))
            .filter_map(|id| {
                let record = self.runs.get_mut(id)?;
                (record.status == RunStatus::InProgress).then(|| {
                    record.lease_expires_at = Some(until);
                    id.clone()
                })
            })
            .collect()
    }

    pub(super) fn fail_lost(
        &mut self,
        holder: &str,
        grace: Duration,
        limit: usize,
    ) -> Vec<RunRecord> {
        let now = SystemTime::now();
        let lost: Vec<String> = self
            .runs
            .values()
            .filter(|record| record.status == RunStatus::InProgress)
            .filter(|record| {
                record
                    .lease_expires_at
                    .is_some_and(|expires| expires + grace < now)
            })
            .filter(|record| {
                self.holders
                    .get(&record.id)
                    .is_none_or(|held| held != holder)
            })
            .take(limit)
            .map(|record| record.id.clone())
            .collect();
        lost.iter()
            .filter_map(|id| match self.end(id, LOST) {
                Ended::Now(record) => Some(record),
                _ => None,
            })
            .collect()
    }

    /// Stops `run` to wait (see [`crate::RunStore::suspend_run`]).
    pub(super) fn suspend(
        &mut self,
        run: NewRun<'_>,
        pending: &str,
        expires_at: SystemTime,
    ) -> Result<RunRecord, StorageError> {
        if !self.runs.contains_key(run.id) {
            self.check_session(run.session)?;
            self.insert(Self::record_of(&run, RunStatus::InProgress));
        }
        let Some(record) = self.runs.get_mut(run.id) else {
            return Err(StorageError::Corrupt(format!("run {} vanished", run.id)));
        };
        if record.status != RunStatus::InProgress {
            return Err(StorageError::RunEnded {
                run: run.id.to_owned(),
                status: record.status,
            });
        }
        record.status = RunStatus::RequiresAction;
        record.background = true;
        record.lease_expires_at = None;
        self.versions += 1;
        record.action = Some(RunAction {
            pending: pending.to_owned(),
            expires_at,
            version: self.versions,
        });
        let record = record.clone();
        self.holders.remove(&record.id);
        self.emit(&record);
        Ok(record)
    }

    /// Writes `answer` over the version it read (see [`crate::RunStore::answer_run`]).
    pub(super) fn answer(&mut self, answer: RunAnswer<'_>) -> Answered {
        let Some(record) = self.runs.get_mut(answer.id) else {
            return Answered::Missing;
        };
        let current = record.action.as_ref().map(|action| action.version);
        if record.status != RunStatus::RequiresAction || current != Some(answer.version) {
            return Answered::Moved(record.clone());
        }
        self.versions += 1;
        match answer.resume {
            Some((holder, lease)) => {
                record.status = RunStatus::InProgress;
                record.action = None;
                record.lease_expires_at = Some(SystemTime::now() + lease);
                self.holders.insert(answer.id.to_owned(), holder.to_owned());
            }
            None => {
                if let Some(action) = &mut record.action {
                    answer.pending.clone_into(&mut action.pending);
                    action.version = self.versions;
                }
            }
        }
        Answered::Now(self.runs[answer.id].clone())
    }

    /// Fails the waiting runs whose wait expired, up to `limit`.
    pub(super) fn expire(&mut self, limit: usize) -> Vec<RunRecord> {
        let now = SystemTime::now();
        let mut expired: Vec<(SystemTime, String)> = self
            .runs
            .values()
            .filter_map(|record| {
                let action = record.action.as_ref()?;
                (record.status == RunStatus::RequiresAction && action.expires_at <= now)
                    .then(|| (action.expires_at, record.id.clone()))
            })
            .collect();
        expired.sort();
        expired.truncate(limit);
        expired
            .iter()
            .filter_map(|(_, id)| match self.end(id, EXPIRED) {
                Ended::Now(record) => Some(record),
                _ => None,
            })
            .collect()
    }

    /// Ends `id` if it is active.
    pub(super) fn end(&mut self, id: &str, end: RunEnd<'_>) -> Ended {
        let Some(record) = self.runs.get_mut(id) else {
            return Ended::Missing;
        };
        if !record.status.is_active() {
            return Ended::Already(record.clone());
        }
        record.status = end.status();
        record.error = Some(end.error());
        Self::finish(record);
        let record = record.clone();
        self.release(&record);
        self.emit(&record);
        Ended::Now(record)
    }

    /// Fails with [`StorageError::RunEnded`] unless `completion`'s run is in progress.
    pub(super) fn check_in_progress(
        &self,
        completion: Option<RunCompletion<'_>>,
    ) -> Result<(), StorageError> {
        let Some(completion) = completion else {
            return Ok(());
        };
        match self.runs.get(completion.id) {
            Some(record) if record.status == RunStatus::InProgress => Ok(()),
            Some(record) => Err(StorageError::RunEnded {
                run: completion.id.to_owned(),
                status: record.status,
            }),
            None if completion.origin.is_some() => Ok(()),
            None => Err(StorageError::Corrupt(format!(
                "run {} was never started",
                completion.id
            ))),
        }
    }

    /// Completes a run checked by [`Self::check_in_progress`], on `session` (recorded so if it
    /// had no record).
    pub(super) fn complete(
        &mut self,
        completion: Option<RunCompletion<'_>>,
        session: Option<&SessionId>,
        usage: TokenUsage,
    ) {
        let Some(completion) = completion else {
            return;
        };
        if let Some(record) = self.runs.get_mut(completion.id) {
            record.status = RunStatus::Completed;
            record.output_text = Some(completion.output_text.to_owned());
            record.usage = usage;
            Self::finish(record);
            let record = record.clone();
            self.release(&record);
            self.emit(&record);
        } else if let Some(origin) = completion.origin {
            let run = NewRun {
                id: completion.id,
                owner: origin.owner,
                session,
                background: false,
                holder: "",
                lease: Duration::ZERO,
                started_at: origin.started_at,
            };
            let mut record = Self::record_of(&run, RunStatus::Completed);
            record.output_text = Some(completion.output_text.to_owned());
            record.usage = usage;
            Self::finish(&mut record);
            self.insert(record);
        }
    }

    pub(super) fn input(&self, id: &str) -> Option<String> {
        self.inputs.get(id).cloned()
    }

    pub(super) fn get(&self, id: &str) -> Option<RunRecord> {
        self.runs.get(id).cloned()
    }

    /// The active run of `session`, if any.
    pub(super) fn active(&self, session: &SessionId) -> Option<&String> {
        self.active.get(session)
    }

    pub(super) fn of_session(
        &self,
        session: &SessionId,
        after: Option<&RunCursor>,
        limit: usize,
    ) -> Vec<RunRecord> {
        let mut listed: Vec<RunRecord> = self
            .by_session
            .get(session)
            .into_iter()
            .flatten()
            .filter_map(|id| self.runs.get(id))
            .filter(|record| {
                after.is_none_or(|cursor| {
                    (record.created_at, &record.id) < (cursor.created_at, &cursor.id)
                })
            })
            .cloned()
            .collect();
        listed.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        listed.truncate(limit);
        listed
    }

    /// Forgets every run of `session` (deleted with it).
    pub(super) fn delete_session(&mut self, session: &SessionId) {
        self.active.remove(session);
        for id in self.by_session.remove(session).into_iter().flatten() {
            self.runs.remove(&id);
            self.inputs.remove(&id);
        }
    }

    /// Forgets finished runs of no stored session (`exists` says which sessions are) that
    /// finished before `before`.
    pub(super) fn sweep_orphans(
        &mut self,
        before: SystemTime,
        exists: impl Fn(&SessionId) -> bool,
    ) {
        let orphans: Vec<(String, Option<SessionId>)> = self
            .runs
            .values()
            .filter(|record| record.finished_at.is_some_and(|at| at < before))
            .filter(|record| {
                record
                    .session
                    .as_ref()
                    .is_none_or(|session| !exists(session))
            })
            .map(|record| (record.id.clone(), record.session.clone()))
            .collect();
        for (id, session) in orphans {
            self.runs.remove(&id);
            self.inputs.remove(&id);
            if let Some(session) = session
                && let Some(ids) = self.by_session.get_mut(&session)
            {
                ids.retain(|kept| *kept != id);
                if ids.is_empty() {
                    self.by_session.remove(&session);
                }
            }
        }
    }

    /// Writes the webhook event of a background run (or one that has waited: it outlived its
    /// request) that just ended or started waiting.
    fn emit(&mut self, record: &RunRecord) {
        if !record.background {
            return;
        }
        let is_response = self
            .inputs
            .get(&record.id)
            .and_then(|input| serde_json::from_str::<serde_json::Value>(input).ok())
            .is_some_and(|input| input.get("response").is_some_and(|kept| !kept.is_null()));
        let subject = match record.id.strip_prefix("run_") {
            Some(hex) if is_response => format!("resp_{hex}"),
            _ => record.id.clone(),
        };
        let now = SystemTime::now();
        self.webhooks.push(OutboxEntry {
            event: WebhookEvent {
                id: format!("evt_{}", uuid::Uuid::new_v4().simple()),
                run_id: record.id.clone(),
                owner: record.owner.clone(),
                kind: format!("response.{}", record.status),
                subject,
                created_at: now,
                attempts: 0,
                delivered_to: Vec::new(),
            },
            next_attempt: now,
            finished_at: None,
        });
    }

    pub(super) fn due_webhooks(&mut self, limit: usize, hold: Duration) -> Vec<WebhookEvent> {
        let now = SystemTime::now();
        self.webhooks
            .iter_mut()
            .filter(|entry| entry.finished_at.is_none() && entry.next_attempt <= now)
            .take(limit)
            .map(|entry| {
                entry.next_attempt = now + hold;
                entry.event.clone()
            })
            .collect()
    }

    pub(super) fn webhook_attempted(
        &mut self,
        id: &str,
        delivered_to: &[String],
        retry_in: Option<Duration>,
    ) {
        let now = SystemTime::now();
        if let Some(entry) = self.webhooks.iter_mut().find(|entry| entry.event.id == id) {
            entry.event.attempts += 1;
            entry.event.delivered_to = delivered_to.to_vec();
            match retry_in {
                Some(retry_in) => entry.next_attempt = now + retry_in,
                None => entry.finished_at = Some(now),
            }
        }
    }

    pub(super) fn purge_webhooks(&mut self, before: SystemTime) -> usize {
        let count = self.webhooks.len();
        self.webhooks
            .retain(|entry| entry.finished_at.is_none_or(|finished| finished >= before));
        count - self.webhooks.len()
    }

    fn finish(record: &mut RunRecord) {
        record.finished_at = Some(SystemTime::now());
        record.lease_expires_at = None;
        record.action = None;
    }

    fn release(&mut self, record: &RunRecord) {
        self.holders.remove(&record.id);
        if let Some(session) = &record.session
            && self.active.get(session) == Some(&record.id)
        {
            self.active.remove(session);
        }
    }
}
