//! `ConversationStore` on Postgres. A turn is one transaction guarded by the expected sequence.

use agent_core::{Message, Role, SessionId, TokenUsage, ToolCall, Turn};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::schema::{messages, sessions};
use super::{BACKEND, PostgresStore, TransactionError, query_error};
use crate::error::{StorageError, bounded};
use crate::model::{SessionInfo, StoredMessage};
use crate::traits::ConversationStore;

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
}

#[derive(Debug, Queryable, Selectable, Insertable)]
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
}

fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl TryFrom<SessionRow> for SessionInfo {
    type Error = StorageError;

    fn try_from(row: SessionRow) -> Result<Self, StorageError> {
        Ok(Self {
            id: SessionId::parse(&row.id)
                .map_err(|_| StorageError::Corrupt(format!("session id {:?}", row.id)))?,
            created_at: row.created_at.into(),
            updated_at: row.updated_at.into(),
            next_sequence: unsigned(row.next_sequence),
            turn_count: unsigned(row.turn_count),
            usage: TokenUsage {
                prompt_tokens: unsigned(row.prompt_tokens),
                completion_tokens: unsigned(row.completion_tokens),
            },
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
        })
    }
}

impl PostgresStore {
    async fn load_session(
        connection: &mut diesel_async::AsyncPgConnection,
        id: &SessionId,
    ) -> Result<Option<SessionInfo>, StorageError> {
        let row = sessions::table
            .find(id.as_str())
            .select(SessionRow::as_select())
            .first(connection)
            .await
            .optional()
            .map_err(query_error)?;
        row.map(SessionInfo::try_from).transpose()
    }
}

#[async_trait]
impl ConversationStore for PostgresStore {
    #[tracing::instrument(skip(self), fields(backend = BACKEND))]
    async fn ensure_session(&self, id: &SessionId) -> Result<SessionInfo, StorageError> {
        bounded(BACKEND, self.call_limit, async {
            let mut connection = self.connection().await?;
            if let Some(info) = Self::load_session(&mut connection, id).await? {
                return Ok(info);
            }
            let now = Utc::now();
            let inserted = diesel::insert_into(sessions::table)
                .values((
                    sessions::id.eq(id.as_str()),
                    sessions::created_at.eq(now),
                    sessions::updated_at.eq(now),
                ))
                .on_conflict(sessions::id)
                .do_nothing()
                .returning(SessionRow::as_returning())
                .get_result(&mut connection)
                .await
                .optional()
                .map_err(query_error)?;
            match inserted {
                Some(row) => SessionInfo::try_from(row),
                // Another request created it in between.
                None => Self::load_session(&mut connection, id)
                    .await?
                    .ok_or_else(|| StorageError::SessionNotFound(id.to_string())),
            }
        })
        .await
    }

    #[tracing::instrument(skip(self), fields(backend = BACKEND))]
    async fn session(&self, id: &SessionId) -> Result<Option<SessionInfo>, StorageError> {
        bounded(BACKEND, self.call_limit, async {
            let mut connection = self.connection().await?;
            Self::load_session(&mut connection, id).await
        })
        .await
    }

    #[tracing::instrument(skip(self), fields(backend = BACKEND))]
    async fn recent_messages(
        &self,
        id: &SessionId,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StorageError> {
        let limit = limit.min(crate::MAX_HISTORY_WINDOW) as i64;
        bounded(BACKEND, self.call_limit, async {
            let mut connection = self.connection().await?;
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
        })
        .await
    }

    #[tracing::instrument(skip(self, turn), fields(backend = BACKEND, messages = turn.messages.len()))]
    async fn append_turn(
        &self,
        id: &SessionId,
        expected_next_sequence: u64,
        turn: &Turn,
    ) -> Result<SessionInfo, StorageError> {
        let now = Utc::now();
        let last = turn.messages.len().saturating_sub(1);
        let rows = turn
            .messages
            .iter()
            .enumerate()
            .map(|(index, message)| {
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
                Ok(MessageRow {
                    session_id: id.as_str().to_owned(),
                    sequence: signed(expected_next_sequence + index as u64),
                    role: message.role.as_str().to_owned(),
                    content: message.content.clone(),
                    tool_calls,
                    tool_call_id: message.tool_call_id.clone(),
                    tokens: (index == last).then(|| signed(turn.usage.total())),
                    created_at: now,
                })
            })
            .collect::<Result<Vec<_>, StorageError>>()?;
        let added = signed(turn.messages.len() as u64);
        let expected = signed(expected_next_sequence);
        let usage = turn.usage;
        bounded(BACKEND, self.call_limit, async {
            let mut connection = self.connection().await?;
            let row = connection
                .transaction(async |connection| {
                    // The WHERE on next_sequence makes a stale writer update nothing; the row lock
                    // makes concurrent writers of one session wait for each other.
                    let updated = diesel::update(
                        sessions::table
                            .find(id.as_str())
                            .filter(sessions::next_sequence.eq(expected)),
                    )
                    .set((
                        sessions::next_sequence.eq(sessions::next_sequence + added),
                        sessions::turn_count.eq(sessions::turn_count + 1),
                        sessions::prompt_tokens
                            .eq(sessions::prompt_tokens + signed(usage.prompt_tokens)),
                        sessions::completion_tokens
                            .eq(sessions::completion_tokens + signed(usage.completion_tokens)),
                        sessions::updated_at.eq(now),
                    ))
                    .returning(SessionRow::as_returning())
                    .get_result(connection)
                    .await
                    .optional()?;
                    let Some(row) = updated else {
                        let actual: Option<i64> = sessions::table
                            .find(id.as_str())
                            .select(sessions::next_sequence)
                            .first(connection)
                            .await
                            .optional()?;
                        return Err(TransactionError::Storage(match actual {
                            None => StorageError::SessionNotFound(id.to_string()),
                            Some(actual) => StorageError::Conflict {
                                session: id.to_string(),
                                expected: expected_next_sequence,
                                actual: unsigned(actual),
                            },
                        }));
                    };
                    diesel::insert_into(messages::table)
                        .values(&rows)
                        .execute(connection)
                        .await?;
                    Ok::<_, TransactionError>(row)
                })
                .await
                .map_err(StorageError::from)?;
            SessionInfo::try_from(row)
        })
        .await
    }

    #[tracing::instrument(skip(self), fields(backend = BACKEND))]
    async fn delete_session(&self, id: &SessionId) -> Result<bool, StorageError> {
        bounded(BACKEND, self.call_limit, async {
            let mut connection = self.connection().await?;
            let deleted = diesel::delete(sessions::table.find(id.as_str()))
                .execute(&mut connection)
                .await
                .map_err(query_error)?;
            Ok(deleted > 0)
        })
        .await
    }
}
