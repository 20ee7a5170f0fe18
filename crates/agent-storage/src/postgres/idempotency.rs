//! `IdempotencyStore` on Postgres: one row per key, claimed atomically with an upsert.

use std::time::Duration;

use async_trait::async_trait;
use diesel::QueryableByName;
use diesel::sql_types::{Double, Nullable, Text};
use diesel_async::RunQueryDsl;

use super::{BACKEND, PostgresStore, query_error};
use crate::error::{StorageError, bounded};
use crate::model::IdempotencyBegin;
use crate::traits::IdempotencyStore;

/// Inserts a claim, or takes over an expired record; returns a row only when the claim is ours.
const CLAIM: &str = "\
    INSERT INTO idempotency_records (key, fingerprint, response, expires_at) \
    VALUES ($1, $2, NULL, now() + make_interval(secs => $3)) \
    ON CONFLICT (key) DO UPDATE \
        SET fingerprint = EXCLUDED.fingerprint, response = NULL, created_at = now(), \
            expires_at = EXCLUDED.expires_at \
        WHERE idempotency_records.expires_at <= now() \
    RETURNING fingerprint, response";

const READ: &str = "\
    SELECT fingerprint, response FROM idempotency_records WHERE key = $1 AND expires_at > now()";

#[derive(QueryableByName)]
struct RecordRow {
    #[diesel(sql_type = Text)]
    fingerprint: String,
    #[diesel(sql_type = Nullable<Text>)]
    response: Option<String>,
}

#[async_trait]
impl IdempotencyStore for PostgresStore {
    #[tracing::instrument(level = "debug", skip(self, fingerprint), fields(backend = BACKEND))]
    async fn begin(
        &self,
        key: &str,
        fingerprint: &str,
        lease: Duration,
    ) -> Result<IdempotencyBegin, StorageError> {
        bounded(BACKEND, self.call_limit, async {
            let mut connection = self.connection().await?;
            // A record can expire or be abandoned between the two statements; try again then.
            for _ in 0..3 {
                let claimed: Vec<RecordRow> = diesel::sql_query(CLAIM)
                    .bind::<Text, _>(key)
                    .bind::<Text, _>(fingerprint)
                    .bind::<Double, _>(lease.as_secs_f64())
                    .load(&mut connection)
                    .await
                    .map_err(query_error)?;
                if !claimed.is_empty() {
                    return Ok(IdempotencyBegin::Started);
                }
                let existing: Option<RecordRow> = diesel::sql_query(READ)
                    .bind::<Text, _>(key)
                    .load(&mut connection)
                    .await
                    .map_err(query_error)?
                    .into_iter()
                    .next();
                if let Some(record) = existing {
                    return Ok(if record.fingerprint != fingerprint {
                        IdempotencyBegin::Mismatch
                    } else if let Some(response) = record.response {
                        IdempotencyBegin::Completed(response)
                    } else {
                        IdempotencyBegin::InProgress
                    });
                }
            }
            Err(StorageError::Backend {
                backend: BACKEND,
                source: format!("idempotency key {key:?} kept changing").into(),
            })
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip(self, response), fields(backend = BACKEND))]
    async fn complete(
        &self,
        key: &str,
        response: &str,
        retention: Duration,
    ) -> Result<(), StorageError> {
        bounded(BACKEND, self.call_limit, async {
            let mut connection = self.connection().await?;
            diesel::sql_query(
                "UPDATE idempotency_records \
                 SET response = $2, expires_at = now() + make_interval(secs => $3) WHERE key = $1",
            )
            .bind::<Text, _>(key)
            .bind::<Text, _>(response)
            .bind::<Double, _>(retention.as_secs_f64())
            .execute(&mut connection)
            .await
            .map_err(query_error)?;
            // Now and then, purge expired records so the table stays bounded.
            if rand::random_ratio(1, 100) {
                purge_expired(&mut connection).await?;
            }
            Ok(())
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn abandon(&self, key: &str) -> Result<(), StorageError> {
        bounded(BACKEND, self.call_limit, async {
            let mut connection = self.connection().await?;
            diesel::sql_query(
                "DELETE FROM idempotency_records WHERE key = $1 AND response IS NULL",
            )
            .bind::<Text, _>(key)
            .execute(&mut connection)
            .await
            .map_err(query_error)?;
            purge_expired(&mut connection).await
        })
        .await
    }
}

async fn purge_expired(
    connection: &mut diesel_async::AsyncPgConnection,
) -> Result<(), StorageError> {
    diesel::sql_query(
        "DELETE FROM idempotency_records WHERE expires_at < now() - interval '1 hour'",
    )
    .execute(connection)
    .await
    .map_err(query_error)?;
    Ok(())
}
