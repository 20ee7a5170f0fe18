//! `RunStore` on Postgres: a run is a row of `runs`; starting one is one statement (an insert
//! that the partial unique index on a session's active run refuses), ending one a conditional
//! update. A completed run is written by its turn's statement (`statements::walk_turn`).

use std::time::{Duration, SystemTime};

use agent_core::{SessionId, TokenUsage};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Bool, Double, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::schema::{run_actions, runs};
use super::{BACKEND, PostgresStore, query_error};
use crate::error::{StorageError, bounded};
use crate::model::{
    Answered, ClaimedRun, Ended, NewRun, QueuedRun, RUN_LOST, RunAction, RunAnswer, RunCursor,
    RunEnd, RunError, RunRecord, RunStatus,
};
use crate::traits::RunStore;

/// The statuses of an active run, as the partial unique index names them.
pub(super) const ACTIVE: [&str; 3] = ["queued", "in_progress", "requires_action"];

/// What a run lost by its executor says.
pub(super) const LOST_MESSAGE: &str = "the run's executor stopped renewing its lease (its replica is gone); tools may have run, so it is not retried";

#[derive(Debug, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = runs, check_for_backend(diesel::pg::Pg))]
pub(super) struct RunRow {
    id: String,
    owner: String,
    session_id: Option<String>,
    status: String,
    background: bool,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    lease_expires_at: Option<DateTime<Utc>>,
    error_code: Option<String>,
    error_message: Option<String>,
    output_text: Option<String>,
    prompt_tokens: i64,
    completion_tokens: i64,
}

/// A waiting run's row of `run_actions`.
#[derive(Debug, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = run_actions, check_for_backend(diesel::pg::Pg))]
pub(super) struct ActionRow {
    pending: serde_json::Value,
    expires_at: DateTime<Utc>,
    version: i64,
}

impl From<ActionRow> for RunAction {
    fn from(row: ActionRow) -> Self {
        Self {
            pending: row.pending.to_string(),
            expires_at: row.expires_at.into(),
            version: u64::try_from(row.version).unwrap_or(0),
        }
    }
}

impl RunRecord {
    /// The record of `row` and, when it waits, its action.
    pub(super) fn with_action(
        (row, action): (RunRow, Option<ActionRow>),
    ) -> Result<Self, StorageError> {
        let mut record = Self::try_from(row)?;
        record.action = action.map(RunAction::from);
        if (record.status == RunStatus::RequiresAction) != record.action.is_some() {
            return Err(StorageError::Corrupt(format!(
                "pending action of run {}",
                record.id
            )));
        }
        Ok(record)
    }
}

impl TryFrom<RunRow> for RunRecord {
    type Error = StorageError;

    fn try_from(row: RunRow) -> Result<Self, StorageError> {
        let corrupt = |what: &str| StorageError::Corrupt(format!("{what} of run {}", row.id));
        let status = RunStatus::parse(&row.status).ok_or_else(|| corrupt("status"))?;
        let session = row
            .session_id
            .as_deref()
            .map(SessionId::parse_stored)
            .transpose()
            .map_err(|_| corrupt("session"))?;
        let error = row.error_code.map(|code| RunError {
            code,
            message: row.error_message.unwrap_or_default(),
        });
        Ok(Self {
            id: row.id,
            owner: row.owner,
            session,
            status,
            background: row.background,
            created_at: row.created_at.into(),
            started_at: row.started_at.map(Into::into),
            finished_at: row.finished_at.map(Into::into),
            error,
            output_text: row.output_text,
            usage: TokenUsage {
                prompt_tokens: u64::try_from(row.prompt_tokens).unwrap_or(0),
                completion_tokens: u64::try_from(row.completion_tokens).unwrap_or(0),
            },
            lease_expires_at: row.lease_expires_at.map(Into::into),
            action: None,
        })
    }
}

/// Inserts a run in progress, leased for `lease_seconds`, unless its session has an active run
/// (no row back). Hand-written for a static query id: it is on every turn's path.
#[derive(Debug, Clone, Copy)]
struct StartRun<'a> {
    id: &'a str,
    owner: &'a str,
    session: Option<&'a str>,
    background: bool,
    holder: &'a str,
    lease_seconds: f64,
    started_at: DateTime<Utc>,
}

impl QueryId for StartRun<'_> {
    type QueryId = StartRun<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for StartRun<'_> {
    type SqlType = <<RunRow as Selectable<Pg>>::SelectExpression as Expression>::SqlType;
}

impl QueryFragment<Pg> for StartRun<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "INSERT INTO runs (id, owner, session_id, status, background, created_at, \
             started_at, lease_holder, lease_expires_at) VALUES (",
        );
        out.push_bind_param::<Text, _>(self.id)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(self.owner)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&self.session)?;
        out.push_sql(", 'in_progress', ");
        out.push_bind_param::<Bool, _>(&self.background)?;
        out.push_sql(", ");
        out.push_bind_param::<Timestamptz, _>(&self.started_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Timestamptz, _>(&self.started_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(self.holder)?;
        out.push_sql(", now() + make_interval(secs => ");
        out.push_bind_param::<Double, _>(&self.lease_seconds)?;
        out.push_sql(
            ")) ON CONFLICT (session_id) WHERE status IN ('queued', 'in_progress', \
             'requires_action') DO NOTHING RETURNING ",
        );
        out.push_sql(RUN_COLUMNS);
        Ok(())
    }
}

/// `RunRow`'s columns, in its order.
pub(super) const RUN_COLUMNS: &str = "id, owner, session_id, status, background, created_at, started_at, \
     finished_at, lease_expires_at, error_code, error_message, output_text, prompt_tokens, \
     completion_tokens";

impl PostgresStore {
    /// The run `id`, on `connection`.
    pub(super) async fn load_run(
        connection: &mut AsyncPgConnection,
        id: &str,
    ) -> Result<Option<RunRecord>, StorageError> {
        let row: Option<(RunRow, Option<ActionRow>)> = runs::table
            .left_join(run_actions::table)
            .filter(runs::id.eq(id))
            .select((RunRow::as_select(), Option::<ActionRow>::as_select()))
            .first(connection)
            .await
            .optional()
            .map_err(query_error)?;
        row.map(RunRecord::with_action).transpose()
    }

    /// Why the run `id` could not be completed (it is no longer in progress); none when it has
    /// no record.
    pub(super) async fn run_ended(
        connection: &mut AsyncPgConnection,
        id: &str,
    ) -> Result<Option<StorageError>, StorageError> {
        Ok(Self::load_run(connection, id)
            .await?
            .map(|run| StorageError::RunEnded {
                run: run.id,
                status: run.status,
            }))
    }

    /// The id of the active run of `session`, if any (pipelined beside other reads).
    pub(super) async fn active_run_id(
        mut connection: &AsyncPgConnection,
        session: &str,
    ) -> Result<Option<String>, StorageError> {
        runs::table
            .filter(runs::session_id.eq(session))
            .filter(runs::status.eq_any(ACTIVE))
            .select(runs::id)
            .first(&mut connection)
            .await
            .optional()
            .map_err(query_error)
    }

    /// The active run of `session`, if any.
    pub(super) async fn active_run(
        connection: &mut AsyncPgConnection,
        session: &str,
    ) -> Result<Option<RunRecord>, StorageError> {
        let row: Option<RunRow> = runs::table
            .filter(runs::session_id.eq(session))
            .filter(runs::status.eq_any(ACTIVE))
            .select(RunRow::as_select())
            .first(connection)
            .await
            .optional()
            .map_err(query_error)?;
        row.map(RunRecord::try_from).transpose()
    }

    /// Answers [`StorageError::SessionBusy`] naming the active run of `session`, unless it has
    /// none (it ended meanwhile) or its lease expired: it is failed as lost, and the caller
    /// tries again.
    async fn clear_session(
        connection: &mut AsyncPgConnection,
        session: &str,
    ) -> Result<(), StorageError> {
        let Some(active) = Self::active_run(connection, session).await? else {
            return Ok(());
        };
        let lost = RunEnd::Failed {
            code: RUN_LOST,
            message: LOST_MESSAGE,
        };
        if Self::end_active(connection, &active.id, lost, true)
            .await?
            .is_none()
        {
            return Err(StorageError::SessionBusy {
                session: session.to_owned(),
                run: active.id,
            });
        }
        tracing::warn!(run = %active.id, "failed a run whose executor's lease expired");
        Ok(())
    }

    /// Ends the run `id` if it is active ([`RunStore::end_run`]).
    async fn end(
        connection: &mut AsyncPgConnection,
        id: &str,
        end: RunEnd<'_>,
    ) -> Result<Ended, StorageError> {
        if let Some(ended) = Self::end_active(connection, id, end, false).await? {
            return Ok(Ended::Now(ended));
        }
        Ok(match Self::load_run(connection, id).await? {
            Some(run) => Ended::Already(run),
            None => Ended::Missing,
        })
    }

    /// Ends the run `id` if it is active and, when `only_expired`, its lease has expired.
    async fn end_active(
        connection: &mut AsyncPgConnection,
        id: &str,
        end: RunEnd<'_>,
        only_expired: bool,
    ) -> Result<Option<RunRecord>, StorageError> {
        let error = end.error();
        let active = runs::table
            .filter(runs::id.eq(id))
            .filter(runs::status.eq_any(ACTIVE));
        let changes = (
            runs::status.eq(end.status().as_str()),
            runs::error_code.eq(error.code),
            runs::error_message.eq(error.message),
            runs::finished_at.eq(diesel::dsl::now),
            runs::lease_holder.eq(None::<String>),
            runs::lease_expires_at.eq(None::<DateTime<Utc>>),
        );
        let row: Option<RunRow> = if only_expired {
            diesel::update(active.filter(runs::lease_expires_at.le(diesel::dsl::now)))
                .set(changes)
                .returning(RunRow::as_returning())
                .get_result(connection)
                .await
        } else {
            diesel::update(active)
                .set(changes)
                .returning(RunRow::as_returning())
                .get_result(connection)
                .await
        }
        .optional()
        .map_err(query_error)?;
        row.map(RunRecord::try_from).transpose()
    }
}

#[async_trait]
impl RunStore for PostgresStore {
    #[tracing::instrument(level = "debug", skip_all, fields(backend = BACKEND))]
    async fn start_run(&self, run: NewRun<'_>) -> Result<RunRecord, StorageError> {
        let statement = StartRun {
            id: run.id,
            owner: run.owner,
            session: run.session.map(SessionId::as_str),
            background: run.background,
            holder: run.holder,
            lease_seconds: run.lease.as_secs_f64(),
            started_at: run.started_at.into(),
        };
        bounded(BACKEND, self.call_limit, async {
            let mut connection = self.connection().await?;
            // Twice at most: once more after failing a run whose lease expired.
            for _ in 0..2 {
                let started: Vec<RunRow> = statement
                    .get_results(&mut *connection)
                    .await
                    .map_err(query_error)?;
                if let Some(row) = started.into_iter().next() {
                    return RunRecord::try_from(row);
                }
                let Some(session) = statement.session else {
                    break;
                };
                Self::clear_session(&mut connection, session).await?;
            }
            Err(StorageError::Corrupt(format!(
                "run {} could not start on a session with no active run",
                run.id
            )))
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(backend = BACKEND))]
    async fn enqueue_run(&self, run: QueuedRun<'_>) -> Result<RunRecord, StorageError> {
        bounded(BACKEND, self.call_limit, async {
            let mut connection = self.connection().await?;
            // Twice at most: once more after failing a run whose lease expired.
            for _ in 0..2 {
                if let Some(queued) = Self::insert_queued(&mut connection, &run).await? {
                    return Ok(queued);
                }
                if let Some(refusal) = Self::queue_refusal(&mut connection, &run).await? {
                    return Err(refusal);
                }
                if let Some(session) = run.session {
                    Self::clear_session(&mut connection, session.as_str()).await?;
                }
            }
            Err(StorageError::Corrupt(format!(
                "run {} could not be queued, with room and no active run",
                run.id
            )))
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(backend = BACKEND))]
    async fn claim_run(
        &self,
        holder: &str,
        lease: Duration,
    ) -> Result<Option<ClaimedRun>, StorageError> {
        bounded(BACKEND, self.call_limit, async {
            let mut connection = self.connection().await?;
            Self::claim_queued(&mut connection, holder, lease).await
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn run_input(&self, id: &str) -> Result<Option<String>, StorageError> {
        bounded(BACKEND, self.call_limit, async {
            let mut connection = self.connection().await?;
            Self::input_of(&mut connection, id).await
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(backend = BACKEND, runs = ids.len()))]
    async fn renew_leases(
        &self,
        holder: &str,
        ids: &[String],
        lease: Duration,
    ) -> Result<Vec<String>, StorageError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        bounded(BACKEND, self.call_limit, async {
            let mut connection = self.connection().await?;
            Self::renew(&mut connection, holder, ids, lease).await
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(backend = BACKEND))]
    async fn fail_lost_runs(
        &self,
        holder: &str,
        grace: Duration,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StorageError> {
        bounded(BACKEND, self.call_limit, async {
            let mut connection = self.connection().await?;
            Self::fail_lost(&mut connection, holder, grace, limit).await
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip(self, end), fields(backend = BACKEND))]
    async fn end_run(&self, id: &str, end: RunEnd<'_>) -> Result<Ended, StorageError> {
        bounded(BACKEND, self.call_limit, async {
            let mut connection = self.connection().await?;
            Self::end(&mut connection, id, end).await
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(backend = BACKEND, runs = runs.len()))]
    async fn record_runs(&self, runs: &[NewRun<'_>]) -> Result<Vec<String>, StorageError> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        bounded(BACKEND, self.call_limit, async {
            let mut connection = self.connection().await?;
            Self::record(&mut connection, runs).await
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip(self, run, end), fields(backend = BACKEND, run = run.id))]
    async fn record_run_end(
        &self,
        run: NewRun<'_>,
        end: RunEnd<'_>,
    ) -> Result<Ended, StorageError> {
        let error = end.error();
        let started_at: DateTime<Utc> = run.started_at.into();
        bounded(BACKEND, self.call_limit, async {
            let mut connection = self.connection().await?;
            let recorded: Option<RunRow> = diesel::insert_into(runs::table)
                .values((
                    runs::id.eq(run.id),
                    runs::owner.eq(run.owner),
                    runs::session_id.eq(run.session.map(SessionId::as_str)),
                    runs::status.eq(end.status().as_str()),
                    runs::background.eq(run.background),
                    runs::created_at.eq(started_at),
                    runs::started_at.eq(started_at),
                    runs::finished_at.eq(diesel::dsl::now),
                    runs::error_code.eq(&error.code),
                    runs::error_message.eq(&error.message),
                ))
                .on_conflict_do_nothing()
                .returning(RunRow::as_returning())
                .get_result(&mut connection)
                .await
                .optional()
                .map_err(query_error)?;
            if let Some(recorded) = recorded {
                return Ok(Ended::Now(RunRecord::try_from(recorded)?));
            }
            Self::end(&mut connection, run.id, end).await
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(backend = BACKEND, run = run.id))]
    async fn suspend_run(
        &self,
        run: NewRun<'_>,
        pending: &str,
        expires_at: SystemTime,
    ) -> Result<RunRecord, StorageError> {
        bounded(BACKEND, self.call_limit, async {
            let mut connection = self.connection().await?;
            Self::suspend(&mut connection, run, pending, expires_at).await
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(backend = BACKEND, run = answer.id))]
    async fn answer_run(&self, answer: RunAnswer<'_>) -> Result<Answered, StorageError> {
        bounded(BACKEND, self.call_limit, async {
            let mut connection = self.connection().await?;
            Self::answer(&mut connection, answer).await
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn expire_actions(&self, limit: usize) -> Result<Vec<RunRecord>, StorageError> {
        bounded(BACKEND, self.call_limit, async {
            let mut connection = self.connection().await?;
            Self::expire(&mut connection, limit).await
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn settle_session(&self, session: &SessionId) -> Result<(), StorageError> {
        bounded(BACKEND, self.call_limit, async {
            let mut connection = self.connection().await?;
            Self::clear_session(&mut connection, session.as_str()).await
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn run(&self, id: &str) -> Result<Option<RunRecord>, StorageError> {
        bounded(BACKEND, self.call_limit, async {
            let mut connection = self.connection().await?;
            Self::load_run(&mut connection, id).await
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn session_runs(
        &self,
        session: &SessionId,
        after: Option<&RunCursor>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StorageError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        bounded(BACKEND, self.call_limit, async {
            let mut connection = self.connection().await?;
            let mut query = runs::table
                .left_join(run_actions::table)
                .filter(runs::session_id.eq(session.as_str()))
                .order((runs::created_at.desc(), runs::id.desc()))
                .limit(limit)
                .select((RunRow::as_select(), Option::<ActionRow>::as_select()))
                .into_boxed();
            if let Some(cursor) = after {
                let created_at: DateTime<Utc> = cursor.created_at.into();
                query = query.filter(
                    runs::created_at.lt(created_at).or(runs::created_at
                        .eq(created_at)
                        .and(runs::id.lt(cursor.id.clone()))),
                );
            }
            let rows: Vec<(RunRow, Option<ActionRow>)> =
                query.load(&mut connection).await.map_err(query_error)?;
            rows.into_iter().map(RunRecord::with_action).collect()
        })
        .await
    }
}
