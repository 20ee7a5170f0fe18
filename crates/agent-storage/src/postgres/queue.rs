//! The run queue and the leases on Postgres: a background run is a `queued` row holding its
//! input; an executor claims the oldest with `FOR UPDATE SKIP LOCKED` (so replicas never take
//! the same run and never wait for each other), renews the leases of its runs in one statement,
//! and any replica fails the runs whose lease expired (their executor is gone).

use std::time::Duration;

use agent_core::SessionId;
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Bool, Double, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::runs::{LOST_MESSAGE, RUN_COLUMNS, RunRow};
use super::{PostgresStore, query_error};
use crate::error::StorageError;
use crate::model::{ClaimedRun, NewRun, QueuedRun, RUN_LOST, RunRecord};

/// Inserts a queued run unless its owner or the whole queue is at its cap, or its session has an
/// active run (no row back, then). Both counts are sums of a few counters (the `run_queue_counts`
/// migration), whatever the queue's length.
const ENQUEUE: &str = "INSERT INTO runs (id, owner, session_id, status, background, input) \
     SELECT $1, $2, $3, 'queued', true, $4::jsonb \
     WHERE COALESCE((SELECT sum(queued) FROM run_queue_owner_counts WHERE owner = $2), 0) < $5 \
       AND (SELECT sum(queued) FROM run_queue_counts) < $6 \
     ON CONFLICT (session_id) WHERE status IN ('queued', 'in_progress', 'requires_action') \
     DO NOTHING RETURNING ";

/// Counts the queued runs: the owner's and everyone's.
const COUNT_QUEUED: &str = "SELECT \
     COALESCE((SELECT sum(queued) FROM run_queue_owner_counts WHERE owner = $1), 0)::bigint \
         AS mine, \
     (SELECT sum(queued) FROM run_queue_counts)::bigint AS total";

#[derive(Debug, QueryableByName)]
struct Queued {
    #[diesel(sql_type = BigInt)]
    mine: i64,
    #[diesel(sql_type = BigInt)]
    total: i64,
}

/// Takes the oldest queued run no other transaction holds.
const CLAIM: &str = "WITH next AS ( \
         SELECT id, input FROM runs WHERE status = 'queued' \
         ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) \
     UPDATE runs SET status = 'in_progress', started_at = now(), lease_holder = $1, \
         lease_expires_at = now() + make_interval(secs => $2) \
     FROM next WHERE runs.id = next.id \
     RETURNING next.input::text AS claimed_input, ";

#[derive(Debug, QueryableByName)]
struct Claimed {
    #[diesel(embed)]
    run: RunRow,
    #[diesel(sql_type = Nullable<Text>)]
    claimed_input: Option<String>,
}

const INPUT: &str = "SELECT input::text AS input FROM runs WHERE id = $1";

#[derive(Debug, QueryableByName)]
struct Input {
    #[diesel(sql_type = Nullable<Text>)]
    input: Option<String>,
}

/// Answers the runs of `ids` still in progress and held; extends the leases of those due (half
/// their lease or less left): a run is written about twice a lease, not at every renewal.
const RENEW: &str = "WITH held AS ( \
         SELECT id, lease_expires_at FROM runs \
         WHERE id = ANY($1) AND status = 'in_progress' AND lease_holder = $2), \
     renewed AS ( \
         UPDATE runs SET lease_expires_at = now() + make_interval(secs => $3) \
         FROM held WHERE runs.id = held.id \
           AND held.lease_expires_at < now() + make_interval(secs => $3 / 2)) \
     SELECT id FROM held";

/// Records runs already running, each in progress since its start and leased to its holder; one
/// with a record, or whose session has another active run, is skipped.
const RECORD: &str = "INSERT INTO runs (id, owner, session_id, status, background, created_at, \
         started_at, lease_holder, lease_expires_at) \
     SELECT r.id, r.owner, r.session_id, 'in_progress', r.background, r.started_at, \
         r.started_at, r.holder, now() + make_interval(secs => r.lease) \
     FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[], $5::timestamptz[], $6::text[], \
         $7::float8[]) AS r (id, owner, session_id, background, started_at, holder, lease) \
     ON CONFLICT DO NOTHING RETURNING id";

#[derive(Debug, QueryableByName)]
struct Renewed {
    #[diesel(sql_type = Text)]
    id: String,
}

/// Fails runs whose lease expired more than a grace ago, oldest first, skipping those another
/// transaction holds (a turn completing its run, another replica's sweep).
const FAIL_LOST: &str = "WITH lost AS ( \
         SELECT id FROM runs WHERE status = 'in_progress' \
           AND lease_expires_at < now() - make_interval(secs => $2) \
           AND lease_holder IS DISTINCT FROM $1 \
         ORDER BY lease_expires_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
     UPDATE runs SET status = 'failed', error_code = $4, error_message = $5, \
         finished_at = now(), lease_holder = NULL, lease_expires_at = NULL \
     FROM lost WHERE runs.id = lost.id RETURNING ";

/// `RUN_COLUMNS` qualified by the table (for statements that join another relation).
pub(super) fn qualified_columns() -> String {
    RUN_COLUMNS
        .split(", ")
        .map(|column| format!("runs.{}", column.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn count(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl PostgresStore {
    /// Queues `run` (see [`crate::RunStore::enqueue_run`]); `None` when refused by its caps or
    /// its session, for the caller to say which.
    pub(super) async fn insert_queued(
        connection: &mut AsyncPgConnection,
        run: &QueuedRun<'_>,
    ) -> Result<Option<RunRecord>, StorageError> {
        let rows: Vec<RunRow> = diesel::sql_query(format!("{ENQUEUE}{RUN_COLUMNS}"))
            .bind::<Text, _>(run.id)
            .bind::<Text, _>(run.owner)
            .bind::<Nullable<Text>, _>(run.session.map(|session| session.as_str()))
            .bind::<Text, _>(run.input)
            .bind::<BigInt, _>(count(run.max_per_owner))
            .bind::<BigInt, _>(count(run.max_total))
            .load(connection)
            .await
            .map_err(query_error)?;
        rows.into_iter().next().map(RunRecord::try_from).transpose()
    }

    /// Which cap refused `run`, if one did.
    pub(super) async fn queue_refusal(
        connection: &mut AsyncPgConnection,
        run: &QueuedRun<'_>,
    ) -> Result<Option<StorageError>, StorageError> {
        let queued: Queued = diesel::sql_query(COUNT_QUEUED)
            .bind::<Text, _>(run.owner)
            .get_result(connection)
            .await
            .map_err(query_error)?;
        let (mine, total) = (
            usize::try_from(queued.mine).unwrap_or(0),
            usize::try_from(queued.total).unwrap_or(0),
        );
        Ok(if mine >= run.max_per_owner {
            Some(StorageError::QueueFull {
                per_owner: true,
                queued: mine,
            })
        } else if total >= run.max_total {
            Some(StorageError::QueueFull {
                per_owner: false,
                queued: total,
            })
        } else {
            None
        })
    }

    pub(super) async fn claim_queued(
        connection: &mut AsyncPgConnection,
        holder: &str,
        lease: Duration,
    ) -> Result<Option<ClaimedRun>, StorageError> {
        let rows: Vec<Claimed> = diesel::sql_query(format!("{CLAIM}{}", qualified_columns()))
            .bind::<Text, _>(holder)
            .bind::<Double, _>(lease.as_secs_f64())
            .load(connection)
            .await
            .map_err(query_error)?;
        rows.into_iter()
            .next()
            .map(|claimed| {
                Ok(ClaimedRun {
                    record: RunRecord::try_from(claimed.run)?,
                    input: claimed.claimed_input.unwrap_or_default(),
                })
            })
            .transpose()
    }

    pub(super) async fn input_of(
        connection: &mut AsyncPgConnection,
        id: &str,
    ) -> Result<Option<String>, StorageError> {
        let rows: Vec<Input> = diesel::sql_query(INPUT)
            .bind::<Text, _>(id)
            .load(connection)
            .await
            .map_err(query_error)?;
        Ok(rows.into_iter().next().and_then(|row| row.input))
    }

    pub(super) async fn renew(
        connection: &mut AsyncPgConnection,
        holder: &str,
        ids: &[String],
        lease: Duration,
    ) -> Result<Vec<String>, StorageError> {
        let rows: Vec<Renewed> = diesel::sql_query(RENEW)
            .bind::<Array<Text>, _>(ids)
            .bind::<Text, _>(holder)
            .bind::<Double, _>(lease.as_secs_f64())
            .load(connection)
            .await
            .map_err(query_error)?;
        Ok(rows.into_iter().map(|row| row.id).collect())
    }

    pub(super) async fn record(
        connection: &mut AsyncPgConnection,
        runs: &[NewRun<'_>],
    ) -> Result<Vec<String>, StorageError> {
        let ids: Vec<&str> = runs.iter().map(|run| run.id).collect();
        let owners: Vec<&str> = runs.iter().map(|run| run.owner).collect();
        let sessions: Vec<Option<&str>> = runs
            .iter()
            .map(|run| run.session.map(SessionId::as_str))
            .collect();
        let background: Vec<bool> = runs.iter().map(|run| run.background).collect();
        let started: Vec<DateTime<Utc>> = runs.iter().map(|run| run.started_at.into()).collect();
        let holders: Vec<&str> = runs.iter().map(|run| run.holder).collect();
        let leases: Vec<f64> = runs.iter().map(|run| run.lease.as_secs_f64()).collect();
        let rows: Vec<Renewed> = diesel::sql_query(RECORD)
            .bind::<Array<Text>, _>(ids)
            .bind::<Array<Text>, _>(owners)
            .bind::<Array<Nullable<Text>>, _>(sessions)
            .bind::<Array<Bool>, _>(background)
            .bind::<Array<Timestamptz>, _>(started)
            .bind::<Array<Text>, _>(holders)
            .bind::<Array<Double>, _>(leases)
            .load(connection)
            .await
            .map_err(query_error)?;
        Ok(rows.into_iter().map(|row| row.id).collect())
    }

    pub(super) async fn fail_lost(
        connection: &mut AsyncPgConnection,
        holder: &str,
        grace: Duration,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StorageError> {
        let rows: Vec<RunRow> = diesel::sql_query(format!("{FAIL_LOST}{}", qualified_columns()))
            .bind::<Text, _>(holder)
            .bind::<Double, _>(grace.as_secs_f64())
            .bind::<BigInt, _>(count(limit))
            .bind::<Text, _>(RUN_LOST)
            .bind::<Text, _>(LOST_MESSAGE)
            .load(connection)
            .await
            .map_err(query_error)?;
        rows.into_iter().map(RunRecord::try_from).collect()
    }
}
