//! The in-memory run table: runs by id, the active run of each session, and each session's runs
//! in the order they started.

use std::collections::HashMap;
use std::time::SystemTime;

use agent_core::{SessionId, TokenUsage};

use crate::error::StorageError;
use crate::model::{
    Ended, NewRun, RUN_LOST, RunCompletion, RunCursor, RunEnd, RunRecord, RunStatus,
};

#[derive(Debug, Default)]
pub(super) struct RunTable {
    runs: HashMap<String, RunRecord>,
    /// The active run of each session that has one.
    active: HashMap<SessionId, String>,
    /// Each session's runs, oldest first.
    by_session: HashMap<SessionId, Vec<String>>,
}

impl RunTable {
    pub(super) fn start(&mut self, run: NewRun<'_>) -> Result<RunRecord, StorageError> {
        let now = SystemTime::now();
        if let Some(session) = run.session
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
            self.end(
                &active,
                RunEnd::Failed {
                    code: RUN_LOST,
                    message: "the run's executor stopped renewing its lease (its replica is gone)",
                },
            );
        }
        if self.runs.contains_key(run.id) {
            return Err(StorageError::Corrupt(format!("run {} exists", run.id)));
        }
        let record = RunRecord {
            id: run.id.to_owned(),
            owner: run.owner.to_owned(),
            session: run.session.cloned(),
            status: RunStatus::InProgress,
            background: run.background,
            created_at: now,
            started_at: Some(now),
            finished_at: None,
            error: None,
            output_text: None,
            usage: TokenUsage::default(),
            lease_expires_at: Some(now + run.lease),
        };
        if let Some(session) = run.session {
            self.active.insert(session.clone(), run.id.to_owned());
            self.by_session
                .entry(session.clone())
                .or_default()
                .push(run.id.to_owned());
        }
        self.runs.insert(run.id.to_owned(), record.clone());
        Ok(record)
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
            None => Err(StorageError::Corrupt(format!(
                "run {} was never started",
                completion.id
            ))),
        }
    }

    /// Completes a run checked by [`Self::check_in_progress`].
    pub(super) fn complete(&mut self, completion: Option<RunCompletion<'_>>, usage: TokenUsage) {
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
        }
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

    fn finish(record: &mut RunRecord) {
        record.finished_at = Some(SystemTime::now());
        record.lease_expires_at = None;
    }

    fn release(&mut self, record: &RunRecord) {
        if let Some(session) = &record.session
            && self.active.get(session) == Some(&record.id)
        {
            self.active.remove(session);
        }
    }
}
