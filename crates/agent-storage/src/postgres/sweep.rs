//! The retention sweep on Postgres: one batch per transaction, under an advisory lock so that
//! one replica sweeps at a time; a session's runs go with it, and finished runs whose session
//! never came to exist are deleted by age.

use std::sync::Arc;
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::conversations::signed;
use super::schema::{runs, sessions};
use super::{BACKEND, PostgresStore, query_error};
use crate::error::{StorageError, bounded};
use crate::retention::{Sweep, SweepLocks};
use crate::traits::SessionLocks;
use agent_core::SessionId;

impl PostgresStore {
    /// [`ConversationStore::sweep_idle`](crate::ConversationStore::sweep_idle).
    pub(super) async fn sweep(
        &self,
        idle_before: SystemTime,
        limit: usize,
        locks: &Arc<dyn SessionLocks>,
    ) -> Result<Option<Sweep>, StorageError> {
        let cutoff: DateTime<Utc> = idle_before.into();
        // Bounded like any call, plus the lock store's part (one round of lock attempts and one
        // of releases, run concurrently).
        bounded(BACKEND, self.call_limit * 2, async {
            let mut connection = self.connection().await?;
            let outcome = connection
                .transaction(async |connection| {
                    let SweepLockRow { held } =
                        diesel::sql_query("SELECT pg_try_advisory_xact_lock($1) AS held")
                            .bind::<diesel::sql_types::BigInt, _>(Self::RETENTION_LOCK)
                            .get_result(connection)
                            .await?;
                    if !held {
                        return Ok(None);
                    }
                    // A session with an active run is not idle, however old its last turn.
                    let active = runs::table
                        .filter(runs::session_id.eq(sessions::id.nullable()))
                        .filter(runs::status.eq_any(super::runs::ACTIVE));
                    let candidates: Vec<String> = sessions::table
                        .filter(sessions::updated_at.lt(cutoff))
                        .filter(diesel::dsl::not(diesel::dsl::exists(active.clone())))
                        .order(sessions::updated_at.asc())
                        .limit(signed(limit as u64))
                        .select(sessions::id)
                        .load(connection)
                        .await?;
                    let found = candidates.len();
                    let ids = candidates
                        .iter()
                        .filter_map(|id| SessionId::parse_stored(id).ok())
                        .collect();
                    let held = SweepLocks::take(locks, ids)
                        .await
                        .map_err(SweepFailure::Storage)?;
                    let locked: Vec<&str> = held.sessions().map(SessionId::as_str).collect();
                    // Still idle: a turn may have been stored since the candidates were read.
                    let deleted = diesel::delete(
                        sessions::table
                            .filter(sessions::id.eq_any(&locked))
                            .filter(sessions::updated_at.lt(cutoff))
                            .filter(diesel::dsl::not(diesel::dsl::exists(active))),
                    )
                    .execute(connection)
                    .await?;
                    // Finished runs of sessions that never came to exist (a failed first turn)
                    // or of none (a conversation sent whole), a batch at a time.
                    diesel::sql_query(
                        "DELETE FROM runs WHERE id IN (SELECT r.id FROM runs r \
                         WHERE r.finished_at < $1 AND (r.session_id IS NULL OR NOT EXISTS \
                         (SELECT 1 FROM sessions s WHERE s.id = r.session_id)) LIMIT $2)",
                    )
                    .bind::<diesel::sql_types::Timestamptz, _>(cutoff)
                    .bind::<diesel::sql_types::BigInt, _>(signed(limit as u64))
                    .execute(connection)
                    .await?;
                    Ok(Some((found, deleted as u64, held)))
                })
                .await;
            // The locks are released once the deletion is committed (or rolled back).
            match outcome {
                Ok(None) => Ok(None),
                Ok(Some((candidates, deleted, held))) => {
                    let busy = held.busy;
                    held.release().await;
                    Ok(Some(Sweep {
                        candidates,
                        deleted,
                        busy,
                    }))
                }
                Err(SweepFailure::Query(error)) => Err(query_error(error)),
                Err(SweepFailure::Storage(error)) => Err(error),
            }
        })
        .await
    }
}

#[derive(QueryableByName)]
struct SweepLockRow {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    held: bool,
}

/// Why a sweep's transaction failed: a query, or the lock store.
enum SweepFailure {
    Query(diesel::result::Error),
    Storage(StorageError),
}

impl From<diesel::result::Error> for SweepFailure {
    fn from(error: diesel::result::Error) -> Self {
        Self::Query(error)
    }
}
