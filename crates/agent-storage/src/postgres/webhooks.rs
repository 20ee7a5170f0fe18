//! `WebhookOutbox` on Postgres: the `webhook_events` rows the runs' trigger writes (see the
//! migration `2026-12-07-000003`), taken with `FOR UPDATE SKIP LOCKED` and held by moving their
//! next attempt past the hold, so replicas never post one event at once.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Double, Integer, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;

use super::{BACKEND, PostgresStore, query_error};
use crate::error::{StorageError, bounded};
use crate::model::WebhookEvent;
use crate::traits::WebhookOutbox;

const DUE: &str = "WITH due AS ( \
         SELECT id FROM webhook_events \
         WHERE finished_at IS NULL AND next_attempt_at <= now() \
         ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
     UPDATE webhook_events e SET next_attempt_at = now() + make_interval(secs => $2) \
     FROM due WHERE e.id = due.id \
     RETURNING e.id, e.run_id, e.owner, e.type, e.subject, e.created_at, e.attempts, \
         e.delivered_to";

const ATTEMPTED: &str = "UPDATE webhook_events SET attempts = attempts + 1, delivered_to = $2, \
         next_attempt_at = CASE WHEN $3 IS NULL THEN next_attempt_at \
             ELSE now() + make_interval(secs => $3) END, \
         finished_at = CASE WHEN $3 IS NULL THEN now() ELSE NULL END \
     WHERE id = $1";

const PURGE: &str = "DELETE FROM webhook_events WHERE finished_at < $1";

#[derive(Debug, QueryableByName)]
struct EventRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    run_id: String,
    #[diesel(sql_type = Text)]
    owner: String,
    #[diesel(sql_type = Text, column_name = "type")]
    kind: String,
    #[diesel(sql_type = Text)]
    subject: String,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
    #[diesel(sql_type = Integer)]
    attempts: i32,
    #[diesel(sql_type = Array<Text>)]
    delivered_to: Vec<String>,
}

impl From<EventRow> for WebhookEvent {
    fn from(row: EventRow) -> Self {
        Self {
            id: row.id,
            run_id: row.run_id,
            owner: row.owner,
            kind: row.kind,
            subject: row.subject,
            created_at: row.created_at.into(),
            attempts: u32::try_from(row.attempts).unwrap_or(0),
            delivered_to: row.delivered_to,
        }
    }
}

#[async_trait]
impl WebhookOutbox for PostgresStore {
    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn due_webhook_events(
        &self,
        limit: usize,
        hold: Duration,
    ) -> Result<Vec<WebhookEvent>, StorageError> {
        bounded(BACKEND, self.call_limit, async {
            let mut connection = self.connection().await?;
            let rows: Vec<EventRow> = diesel::sql_query(DUE)
                .bind::<BigInt, _>(i64::try_from(limit).unwrap_or(i64::MAX))
                .bind::<Double, _>(hold.as_secs_f64())
                .load(&mut *connection)
                .await
                .map_err(query_error)?;
            let mut events: Vec<WebhookEvent> = rows.into_iter().map(Into::into).collect();
            events.sort_by_key(|event| event.created_at);
            Ok(events)
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip(self, delivered_to), fields(backend = BACKEND))]
    async fn webhook_attempted(
        &self,
        id: &str,
        delivered_to: &[String],
        retry_in: Option<Duration>,
    ) -> Result<(), StorageError> {
        bounded(BACKEND, self.call_limit, async {
            let mut connection = self.connection().await?;
            diesel::sql_query(ATTEMPTED)
                .bind::<Text, _>(id)
                .bind::<Array<Text>, _>(delivered_to)
                .bind::<Nullable<Double>, _>(retry_in.map(|retry| retry.as_secs_f64()))
                .execute(&mut *connection)
                .await
                .map_err(query_error)?;
            Ok(())
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn purge_webhook_events(&self, before: SystemTime) -> Result<usize, StorageError> {
        bounded(BACKEND, self.call_limit, async {
            let mut connection = self.connection().await?;
            let before: DateTime<Utc> = before.into();
            diesel::sql_query(PURGE)
                .bind::<Timestamptz, _>(before)
                .execute(&mut *connection)
                .await
                .map_err(query_error)
        })
        .await
    }
}
