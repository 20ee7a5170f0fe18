//! `ConversationStore` on Postgres. A turn is one statement guarded by the expected sequence.

use std::sync::Arc;
use std::time::SystemTime;

use agent_core::{Message, Role, SessionId, TokenUsage, ToolCall, Turn};
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::schema::{messages, responses, runs, sessions, usage_daily};
use super::statements::{
    AppendTurn, CountUsage, CreateTurn, EnsureSession, MessageColumns, OpenSession, RunOrigin,
};
use super::{BACKEND, PostgresStore, query_error};
use crate::error::{StorageError, bounded};
use crate::model::{
    DailyUsage, OpenedSession, ResponseParameters, ResponseRecord, RunCompletion, RunStatus,
    SessionCursor, SessionInfo, SessionSummary, StoredMessage, StoredResponse, TurnRecord,
};
use crate::retention::Sweep;
use crate::traits::{ConversationStore, SessionLocks};

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = sessions, check_for_backend(diesel::pg::Pg))]
struct SessionRow {
    id: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    next_sequence: i64,
    turn_count: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    agent: Option<String>,
    summary: Option<String>,
    summary_through: Option<i64>,
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = responses, check_for_backend(diesel::pg::Pg))]
struct ResponseRow {
    id: String,
    session_id: String,
    sequence: i64,
    created_at: DateTime<Utc>,
    model: String,
    instructions: Option<String>,
    previous_response_id: Option<String>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    max_output_tokens: Option<i32>,
    user_name: Option<String>,
    metadata: serde_json::Value,
    text_format: Option<serde_json::Value>,
    output_text: String,
    prompt_tokens: i64,
    completion_tokens: i64,
}

impl ResponseRow {
    fn into_stored(self) -> Result<StoredResponse, StorageError> {
        let corrupt = |what: &str| StorageError::Corrupt(format!("{what} of response {}", self.id));
        Ok(StoredResponse {
            session: SessionId::parse_stored(&self.session_id)
                .map_err(|_| corrupt(&format!("session id {:?}", self.session_id)))?,
            sequence: unsigned(self.sequence),
            created_at: self.created_at.into(),
            parameters: ResponseParameters {
                model: self.model,
                instructions: self.instructions,
                previous_response_id: self.previous_response_id,
                temperature: self.temperature,
                top_p: self.top_p,
                max_output_tokens: self
                    .max_output_tokens
                    .map(|tokens| u32::try_from(tokens).unwrap_or(0)),
                user: self.user_name,
                metadata: serde_json::from_value(self.metadata)
                    .map_err(|_| corrupt("the metadata"))?,
                text_format: self.text_format,
            },
            output_text: self.output_text,
            usage: TokenUsage {
                prompt_tokens: unsigned(self.prompt_tokens),
                completion_tokens: unsigned(self.completion_tokens),
            },
            id: self.id,
        })
    }
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = messages, check_for_backend(diesel::pg::Pg))]
struct MessageRow {
    session_id: String,
    sequence: i64,
    role: String,
    content: String,
    tool_calls: Option<serde_json::Value>,
    tool_call_id: Option<String>,
    tokens: Option<i64>,
    created_at: DateTime<Utc>,
    context_tokens: Option<i64>,
}

fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

pub(super) fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl TryFrom<SessionRow> for SessionInfo {
    type Error = StorageError;

    fn try_from(row: SessionRow) -> Result<Self, StorageError> {
        Ok(Self {
            id: SessionId::parse_stored(&row.id)
                .map_err(|_| StorageError::Corrupt(format!("session id {:?}", row.id)))?,
            created_at: row.created_at.into(),
            updated_at: row.updated_at.into(),
            next_sequence: unsigned(row.next_sequence),
            turn_count: unsigned(row.turn_count),
            usage: TokenUsage {
                prompt_tokens: unsigned(row.prompt_tokens),
                completion_tokens: unsigned(row.completion_tokens),
            },
            agent: row.agent,
            summary: row
                .summary
                .zip(row.summary_through)
                .map(|(text, through)| SessionSummary {
                    text,
                    through: unsigned(through),
                }),
        })
    }
}

impl TryFrom<MessageRow> for StoredMessage {
    type Error = StorageError;

    fn try_from(row: MessageRow) -> Result<Self, StorageError> {
        let corrupt = |what: &str| {
            StorageError::Corrupt(format!(
                "{what} of message {}/{}",
                row.session_id, row.sequence
            ))
        };
        let role = Role::parse(&row.role).ok_or_else(|| corrupt("role"))?;
        let tool_calls: Vec<ToolCall> = match row.tool_calls.clone() {
            None => Vec::new(),
            Some(value) => serde_json::from_value(value).map_err(|_| corrupt("tool calls"))?,
        };
        Ok(Self {
            sequence: unsigned(row.sequence),
            message: Message {
                role,
                content: row.content,
                tool_calls,
                tool_call_id: row.tool_call_id,
            },
            tokens: row.tokens.map(unsigned),
            created_at: row.created_at.into(),
            context_tokens: row.context_tokens.map(unsigned),
        })
    }
}

impl PostgresStore {
    async fn load_session(
        mut connection: &AsyncPgConnection,
        id: &SessionId,
    ) -> Result<Option<SessionInfo>, StorageError> {
        let row = sessions::table
            .find(id.as_str())
            .select(SessionRow::as_select())
            .first(&mut connection)
            .await
            .optional()
            .map_err(query_error)?;
        row.map(SessionInfo::try_from).transpose()
    }

    /// Creates the session if needed and returns it; one round trip unless another request
    /// created it at the same moment.
    async fn ensure(
        mut connection: &AsyncPgConnection,
        id: &SessionId,
    ) -> Result<SessionInfo, StorageError> {
        let statement = EnsureSession {
            id: id.as_str(),
            now: Utc::now(),
        };
        // Read to the end of the answer, not just its row (see `append_turn`).
        let rows: Vec<SessionRow> = statement
            .get_results(&mut connection)
            .await
            .map_err(query_error)?;
        match rows.into_iter().next() {
            Some(row) => SessionInfo::try_from(row),
            // Created by another transaction after this statement's snapshot: read it now.
            None => Self::load_session(connection, id)
                .await?
                .ok_or_else(|| StorageError::SessionNotFound(id.to_string())),
        }
    }

    async fn recent(
        mut connection: &AsyncPgConnection,
        id: &SessionId,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StorageError> {
        let limit = limit.min(crate::MAX_HISTORY_WINDOW) as i64;
        let mut rows = messages::table
            .filter(messages::session_id.eq(id.as_str()))
            .order(messages::sequence.desc())
            .limit(limit)
            .select(MessageRow::as_select())
            .load(&mut connection)
            .await
            .map_err(query_error)?;
        rows.reverse();
        rows.into_iter().map(StoredMessage::try_from).collect()
    }
}

/// A turn's messages as the columns the insert unnests.
fn message_columns(turn: &Turn, first_sequence: u64) -> Result<MessageColumns<'_>, StorageError> {
    let last = turn.messages.len().saturating_sub(1);
    let mut columns = MessageColumns::default();
    for (index, message) in turn.messages.iter().enumerate() {
        let tool_calls = if message.tool_calls.is_empty() {
            None
        } else {
            let value = serde_json::to_value(&message.tool_calls).map_err(|error| {
                StorageError::Backend {
                    backend: BACKEND,
                    source: error.into(),
                }
            })?;
            Some(value)
        };
        columns
            .sequences
            .push(signed(first_sequence + index as u64));
        columns.roles.push(message.role.as_str());
        columns.contents.push(&message.content);
        columns.tool_calls.push(tool_calls);
        columns.tool_call_ids.push(message.tool_call_id.as_deref());
        columns
            .tokens
            .push((index == last).then(|| signed(turn.usage.total())));
        let counted = turn.context_tokens.get(index).copied().map(signed);
        columns.context_tokens.push(counted);
    }
    Ok(columns)
}

#[async_trait]
impl ConversationStore for PostgresStore {
    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn ensure_session(&self, id: &SessionId) -> Result<SessionInfo, StorageError> {
        bounded(BACKEND, self.call_limit, async {
            let connection = self.connection().await?;
            Self::ensure(&connection, id).await
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn session(&self, id: &SessionId) -> Result<Option<SessionInfo>, StorageError> {
        bounded(BACKEND, self.call_limit, async {
            let connection = self.connection().await?;
            Self::load_session(&connection, id).await
        })
        .await
    }

    /// The ensure and the history read are one statement ([`OpenSession`]); when another
    /// request created the session at the same moment, the two of them pipelined.
    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn open_session(
        &self,
        id: &SessionId,
        limit: usize,
    ) -> Result<OpenedSession, StorageError> {
        bounded(BACKEND, self.call_limit, async {
            let mut connection = self.connection().await?;
            let statement = OpenSession {
                id: id.as_str(),
                now: Utc::now(),
                limit: limit.min(crate::MAX_HISTORY_WINDOW) as i64,
            };
            let rows: Vec<(SessionRow, Option<MessageRow>, Option<String>)> =
                statement.load(&mut connection).await.map_err(query_error)?;
            let mut rows = rows.into_iter();
            let Some((session, first, active_run)) = rows.next() else {
                let (info, messages, active_run) = futures_util::try_join!(
                    Self::ensure(&connection, id),
                    Self::recent(&connection, id, limit),
                    Self::active_run_id(&connection, id.as_str())
                )?;
                return Ok(OpenedSession {
                    info,
                    messages,
                    active_run,
                });
            };
            let messages = first
                .into_iter()
                .chain(rows.filter_map(|(_, message, _)| message))
                .map(StoredMessage::try_from)
                .collect::<Result<_, _>>()?;
            Ok(OpenedSession {
                info: SessionInfo::try_from(session)?,
                messages,
                active_run,
            })
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn recent_messages(
        &self,
        id: &SessionId,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StorageError> {
        bounded(BACKEND, self.call_limit, async {
            let connection = self.connection().await?;
            Self::recent(&connection, id, limit).await
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip(self, turn), fields(backend = BACKEND, messages = turn.messages.len()))]
    async fn append_turn(
        &self,
        id: &SessionId,
        expected_next_sequence: u64,
        turn: &Turn,
    ) -> Result<SessionInfo, StorageError> {
        self.append(id, expected_next_sequence, turn, TurnRecord::default())
            .await
    }

    #[tracing::instrument(level = "debug", skip(self, turn, record), fields(backend = BACKEND, messages = turn.messages.len()))]
    async fn append_turn_recording(
        &self,
        id: &SessionId,
        expected_next_sequence: u64,
        turn: &Turn,
        record: TurnRecord<'_>,
    ) -> Result<(SessionInfo, bool), StorageError> {
        let info = self
            .append(id, expected_next_sequence, turn, record)
            .await?;
        Ok((info, record.idempotency.is_some()))
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn response(&self, id: &str) -> Result<Option<StoredResponse>, StorageError> {
        bounded(BACKEND, self.call_limit, async {
            let mut connection = self.connection().await?;
            let row: Option<ResponseRow> = responses::table
                .find(id)
                .select(ResponseRow::as_select())
                .first(&mut connection)
                .await
                .optional()
                .map_err(query_error)?;
            row.map(ResponseRow::into_stored).transpose()
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn delete_session(&self, id: &SessionId) -> Result<bool, StorageError> {
        bounded(BACKEND, self.call_limit, async {
            let mut connection = self.connection().await?;
            // Not while a run is active; its runs go with it (a trigger).
            let active = runs::table
                .filter(runs::session_id.eq(id.as_str()))
                .filter(runs::status.eq_any(super::runs::ACTIVE));
            let deleted = diesel::delete(
                sessions::table
                    .find(id.as_str())
                    .filter(diesel::dsl::not(diesel::dsl::exists(active))),
            )
            .execute(&mut connection)
            .await
            .map_err(query_error)?;
            if deleted > 0 {
                return Ok(true);
            }
            if let Some(active) = Self::active_run(&mut connection, id.as_str()).await? {
                return Err(StorageError::SessionBusy {
                    session: id.to_string(),
                    run: active.id,
                });
            }
            Ok(false)
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn usage(
        &self,
        owner: Option<&str>,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<DailyUsage>, StorageError> {
        use diesel::dsl::sql;
        use diesel::sql_types::BigInt;
        // Sums of BIGINT are NUMERIC in Postgres: cast back (a day's sums stay far below 2^63).
        let total = |column: &str| sql::<BigInt>(&format!("sum({column})::bigint"));
        bounded(BACKEND, self.call_limit, async {
            let mut connection = self.connection().await?;
            let mut query = usage_daily::table
                .filter(usage_daily::day.between(from, to))
                .group_by((usage_daily::day, usage_daily::owner, usage_daily::agent))
                .select((
                    usage_daily::day,
                    usage_daily::owner,
                    usage_daily::agent,
                    total("turns"),
                    total("prompt_tokens"),
                    total("completion_tokens"),
                ))
                .order((usage_daily::day, usage_daily::owner, usage_daily::agent))
                .into_boxed();
            if let Some(owner) = owner {
                query = query.filter(usage_daily::owner.eq(owner.to_owned()));
            }
            let rows: Vec<(NaiveDate, String, String, i64, i64, i64)> =
                query.load(&mut connection).await.map_err(query_error)?;
            Ok(rows
                .into_iter()
                .map(
                    |(day, owner, agent, turns, prompt, completion)| DailyUsage {
                        owner,
                        day,
                        agent: Some(agent).filter(|agent| !agent.is_empty()),
                        turns: unsigned(turns),
                        usage: TokenUsage {
                            prompt_tokens: unsigned(prompt),
                            completion_tokens: unsigned(completion),
                        },
                    },
                )
                .collect())
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn tokens_used(&self, owner: &str, day: NaiveDate) -> Result<u64, StorageError> {
        use usage_daily::dsl;
        bounded(BACKEND, self.call_limit, async {
            let mut connection = self.connection().await?;
            // The caller-day's rows (at most 64), summed here: a query with a static id, so it
            // stays prepared on the connection (a `sum(...)::bigint` fragment would not).
            let rows: Vec<(i64, i64)> = usage_daily::table
                .filter(dsl::owner.eq(owner))
                .filter(dsl::day.eq(day))
                .select((dsl::prompt_tokens, dsl::completion_tokens))
                .load(&mut connection)
                .await
                .map_err(query_error)?;
            Ok(rows
                .iter()
                .map(|(prompt, completion)| unsigned(*prompt) + unsigned(*completion))
                .sum())
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn count_usage(
        &self,
        owner: &str,
        agent: Option<&str>,
        usage: TokenUsage,
        run: Option<RunCompletion<'_>>,
    ) -> Result<(), StorageError> {
        // A random one of the caller-day's 64 rows, so concurrent turns rarely wait on one.
        let statement = CountUsage {
            owner,
            agent: agent.unwrap_or_default(),
            day: Utc::now().date_naive(),
            shard: rand::random_range(0..64),
            prompt_tokens: signed(usage.prompt_tokens),
            completion_tokens: signed(usage.completion_tokens),
            run: run.map(|run| run.id),
            output_text: run.map(|run| run.output_text),
            origin: RunOrigin::of(run.and_then(|run| run.origin)),
        };
        bounded(BACKEND, self.call_limit, async {
            let mut connection = self.connection().await?;
            // Read to the end, as a turn's statement is (see `append`).
            let counted: Vec<bool> = statement
                .get_results(&mut *connection)
                .await
                .map_err(query_error)?;
            match (counted.is_empty(), run) {
                (true, Some(run)) => Err(Self::run_ended(&mut connection, run.id)
                    .await?
                    .unwrap_or_else(|| {
                        StorageError::Corrupt(format!("run {} was not recorded", run.id))
                    })),
                _ => Ok(()),
            }
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip(self, locks), fields(backend = BACKEND))]
    async fn sweep_idle(
        &self,
        idle_before: SystemTime,
        limit: usize,
        locks: &Arc<dyn SessionLocks>,
    ) -> Result<Option<Sweep>, StorageError> {
        self.sweep(idle_before, limit, locks).await
    }

    #[tracing::instrument(level = "debug", skip(self, after), fields(backend = BACKEND))]
    async fn list_sessions(
        &self,
        owner: &str,
        after: Option<&SessionCursor>,
        limit: usize,
    ) -> Result<Vec<SessionInfo>, StorageError> {
        bounded(BACKEND, self.call_limit, async {
            let mut connection = self.connection().await?;
            let mut query = sessions::table
                .filter(sessions::owner.eq(owner))
                .into_boxed();
            if let Some(cursor) = after {
                let created: DateTime<Utc> = cursor.created_at.into();
                query = query.filter(
                    sessions::created_at.lt(created).or(sessions::created_at
                        .eq(created)
                        .and(sessions::id.lt(cursor.id.as_str().to_owned()))),
                );
            }
            let rows = query
                .order((sessions::created_at.desc(), sessions::id.desc()))
                .limit(signed(limit as u64))
                .select(SessionRow::as_select())
                .load(&mut connection)
                .await
                .map_err(query_error)?;
            rows.into_iter().map(SessionInfo::try_from).collect()
        })
        .await
    }
}

/// A response record as the turn's statement reads it (see `statements::RESPONSE_FIELDS`).
fn response_json(response: ResponseRecord<'_>) -> serde_json::Value {
    let parameters = response.parameters;
    let created_at = response
        .created_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64());
    serde_json::json!({
        "id": response.id,
        "created_at": created_at,
        "model": parameters.model,
        "instructions": parameters.instructions,
        "previous_response_id": parameters.previous_response_id,
        "temperature": parameters.temperature,
        "top_p": parameters.top_p,
        "max_output_tokens": parameters.max_output_tokens,
        "user_name": parameters.user,
        "metadata": parameters.metadata,
        "text_format": parameters.text_format,
        "output_text": response.output_text,
    })
}

impl PostgresStore {
    /// The turn's one statement, writing `record` with it.
    async fn append(
        &self,
        id: &SessionId,
        expected_next_sequence: u64,
        turn: &Turn,
        record: TurnRecord<'_>,
    ) -> Result<SessionInfo, StorageError> {
        let completion = record.idempotency;
        let statement = AppendTurn {
            id: id.as_str(),
            expected: signed(expected_next_sequence),
            added: signed(turn.messages.len() as u64),
            prompt_tokens: signed(turn.usage.prompt_tokens),
            completion_tokens: signed(turn.usage.completion_tokens),
            agent: record.agent,
            summary: record.summary.map(|summary| summary.text),
            summary_through: record.summary.map(|summary| signed(summary.through)),
            now: Utc::now(),
            messages: message_columns(turn, expected_next_sequence)?,
            idempotency_key: completion.map(|completion| completion.key),
            idempotency_response: completion.map(|completion| completion.response),
            retention_seconds: completion
                .map_or(0.0, |completion| completion.retention.as_secs_f64()),
            response: record.response.map(response_json),
            run: record.run.map(|run| run.id),
            output_text: record.run.map(|run| run.output_text),
            origin: RunOrigin::of(record.run.and_then(|run| run.origin)),
        };
        bounded(BACKEND, self.call_limit, async {
            let mut connection = self.connection().await?;
            // A first turn creates its session if needed, in the same statement. The answer is
            // read to its end, not just its row (`get_result` stops there): Postgres sends a
            // statement's rows before it commits, so a backend stopped in between (a fast
            // shutdown) sends the row and then an error, and the turn was not stored.
            let updated: Vec<SessionRow> = if expected_next_sequence == 0 {
                CreateTurn(statement).get_results(&mut *connection).await
            } else {
                statement.get_results(&mut *connection).await
            }
            .map_err(query_error)?;
            if let Some(row) = updated.into_iter().next() {
                return SessionInfo::try_from(row);
            }
            // Nothing was written; say why.
            if let Some(run) = record.run
                && let Some(ended) = Self::run_ended(&mut connection, run.id).await?
                && matches!(ended, StorageError::RunEnded { status, .. } if status != RunStatus::InProgress)
            {
                return Err(ended);
            }
            let actual: Option<i64> = sessions::table
                .find(id.as_str())
                .select(sessions::next_sequence)
                .first(&mut *connection)
                .await
                .optional()
                .map_err(query_error)?;
            Err(match actual {
                None => StorageError::SessionNotFound(id.to_string()),
                Some(actual) => StorageError::Conflict {
                    session: id.to_string(),
                    expected: expected_next_sequence,
                    actual: unsigned(actual),
                },
            })
        })
        .await
    }
}
