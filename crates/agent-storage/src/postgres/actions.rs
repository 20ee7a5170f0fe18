//! Runs that wait for the client on Postgres: a run stops (`requires_action`, its pending state
//! in a row of `run_actions`, no lease), is answered over the version it was read at (a
//! compare-and-set, so two answers sent at once cannot both resume it), and expires. The
//! `run_actions` row exists exactly while its run waits (a trigger drops it when the run stops
//! waiting, however it does).

use std::time::SystemTime;

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Double, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::queue::qualified_columns;
use super::runs::RunRow;
use super::{PostgresStore, query_error};
use crate::error::StorageError;
use crate::model::{Answered, EXPIRED, NewRun, RunAnswer, RunRecord};

/// Stops a recorded run in progress to wait; it has outlived its request (background).
const SUSPEND: &str = "WITH suspended AS ( \
         UPDATE runs SET status = 'requires_action', background = true, lease_holder = NULL, \
             lease_expires_at = NULL \
         WHERE id = $1 AND status = 'in_progress' RETURNING id), \
     action AS ( \
         INSERT INTO run_actions (run_id, pending, expires_at) \
         SELECT id, $2::jsonb, $3 FROM suspended RETURNING run_id) \
     SELECT run_id AS id FROM action";

/// Records a run that had no record, waiting (nothing when its session has an active run, or
/// its id a record).
const SUSPEND_NEW: &str = "WITH suspended AS ( \
         INSERT INTO runs (id, owner, session_id, status, background, created_at, started_at) \
         VALUES ($1, $2, $3, 'requires_action', true, $4, $4) \
         ON CONFLICT DO NOTHING RETURNING id), \
     action AS ( \
         INSERT INTO run_actions (run_id, pending, expires_at) \
         SELECT id, $5::jsonb, $6 FROM suspended RETURNING run_id) \
     SELECT run_id AS id FROM action";

#[derive(Debug, diesel::QueryableByName)]
struct Suspended {
    #[diesel(sql_type = Text)]
    id: String,
}

/// Answers in part: the pending state replaced, under a new version.
const ANSWER: &str = "UPDATE run_actions SET pending = $3::jsonb, \
         version = nextval('run_action_versions') \
     WHERE run_id = $1 AND version = $2 RETURNING run_id AS id";

/// Answers in full: the pending state taken (the trigger would drop it anyway), the run in
/// progress again, leased to its new executor.
const RESUME: &str = "WITH taken AS ( \
         DELETE FROM run_actions WHERE run_id = $1 AND version = $2 RETURNING run_id) \
     UPDATE runs SET status = 'in_progress', lease_holder = $3, \
         lease_expires_at = now() + make_interval(secs => $4) \
     FROM taken WHERE runs.id = taken.run_id AND runs.status = 'requires_action' RETURNING ";

/// Fails waiting runs whose wait expired, soonest expired first.
const EXPIRE: &str = "WITH expired AS ( \
         SELECT run_id FROM run_actions WHERE expires_at <= now() \
         ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
     UPDATE runs SET status = 'failed', error_code = $2, error_message = $3, \
         finished_at = now() \
     FROM expired WHERE runs.id = expired.run_id AND runs.status = 'requires_action' RETURNING ";

impl PostgresStore {
    pub(super) async fn suspend(
        connection: &mut AsyncPgConnection,
        run: NewRun<'_>,
        pending: &str,
        expires_at: SystemTime,
    ) -> Result<RunRecord, StorageError> {
        let expires_at: DateTime<Utc> = expires_at.into();
        let suspended: Vec<Suspended> = diesel::sql_query(SUSPEND)
            .bind::<Text, _>(run.id)
            .bind::<Text, _>(pending)
            .bind::<Timestamptz, _>(expires_at)
            .load(connection)
            .await
            .map_err(query_error)?;
        let suspended = if suspended.is_empty() {
            let started_at: DateTime<Utc> = run.started_at.into();
            diesel::sql_query(SUSPEND_NEW)
                .bind::<Text, _>(run.id)
                .bind::<Text, _>(run.owner)
                .bind::<Nullable<Text>, _>(run.session.map(|session| session.as_str()))
                .bind::<Timestamptz, _>(started_at)
                .bind::<Text, _>(pending)
                .bind::<Timestamptz, _>(expires_at)
                .load(connection)
                .await
                .map_err(query_error)?
        } else {
            suspended
        };
        if suspended.iter().any(|row| row.id == run.id) {
            return Self::load_run(connection, run.id).await?.ok_or_else(|| {
                StorageError::Corrupt(format!("run {} vanished as it stopped", run.id))
            });
        }
        if let Some(ended) = Self::run_ended(connection, run.id).await? {
            return Err(ended);
        }
        // No record of it, and none could be made: its session has another active run.
        let session = run.session.map_or("", |session| session.as_str());
        let active = Self::active_run_id(connection, session).await?;
        Err(StorageError::SessionBusy {
            session: session.to_owned(),
            run: active.unwrap_or_default(),
        })
    }

    pub(super) async fn answer(
        connection: &mut AsyncPgConnection,
        answer: RunAnswer<'_>,
    ) -> Result<Answered, StorageError> {
        let version = i64::try_from(answer.version).unwrap_or(i64::MAX);
        let written = match answer.resume {
            Some((holder, lease)) => {
                let rows: Vec<RunRow> =
                    diesel::sql_query(format!("{RESUME}{}", qualified_columns()))
                        .bind::<Text, _>(answer.id)
                        .bind::<BigInt, _>(version)
                        .bind::<Text, _>(holder)
                        .bind::<Double, _>(lease.as_secs_f64())
                        .load(connection)
                        .await
                        .map_err(query_error)?;
                if let Some(row) = rows.into_iter().next() {
                    return Ok(Answered::Now(RunRecord::try_from(row)?));
                }
                false
            }
            None => {
                let rows: Vec<Suspended> = diesel::sql_query(ANSWER)
                    .bind::<Text, _>(answer.id)
                    .bind::<BigInt, _>(version)
                    .bind::<Text, _>(answer.pending)
                    .load(connection)
                    .await
                    .map_err(query_error)?;
                rows.iter().any(|row| row.id == answer.id)
            }
        };
        Ok(match Self::load_run(connection, answer.id).await? {
            Some(run) if written => Answered::Now(run),
            Some(run) => Answered::Moved(run),
            None => Answered::Missing,
        })
    }

    pub(super) async fn expire(
        connection: &mut AsyncPgConnection,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StorageError> {
        let error = EXPIRED.error();
        let rows: Vec<RunRow> = diesel::sql_query(format!("{EXPIRE}{}", qualified_columns()))
            .bind::<BigInt, _>(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind::<Text, _>(error.code)
            .bind::<Text, _>(error.message)
            .load(connection)
            .await
            .map_err(query_error)?;
        rows.into_iter().map(RunRecord::try_from).collect()
    }
}
