//! The runs API's bodies: a run as `GET /runs/{id}` shows it, a page of a session's runs, and the
//! cursor that continues it.

use agent_storage::{RunCursor, RunRecord};
use serde::Serialize;
use utoipa::ToSchema;

use super::timestamp;
use crate::error::ApiError;
use crate::runs::waiting::{RequiredAction, required_action_of};

/// Where a run is: `queued`, `in_progress` and `requires_action` (waiting for the client's
/// answer to its tool calls) are active (a session has at most one active run); `completed`,
/// `failed` and `cancelled` are final.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RunState {
    Queued,
    InProgress,
    RequiresAction,
    Completed,
    Failed,
    Cancelled,
}

impl From<agent_storage::RunStatus> for RunState {
    fn from(status: agent_storage::RunStatus) -> Self {
        use agent_storage::RunStatus;
        match status {
            RunStatus::Queued => Self::Queued,
            RunStatus::InProgress => Self::InProgress,
            RunStatus::RequiresAction => Self::RequiresAction,
            RunStatus::Completed => Self::Completed,
            RunStatus::Failed => Self::Failed,
            RunStatus::Cancelled => Self::Cancelled,
        }
    }
}

/// A run: every turn is one. A completed run has the `/agent` answer's fields; a failed or
/// cancelled one its `error` (nothing of it was stored).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RunView {
    pub(crate) run_id: String,
    /// The session it continues; null for a conversation the client sent whole (the
    /// OpenAI-compatible chat completions without a session).
    pub(crate) session_id: Option<String>,
    pub(crate) status: RunState,
    /// Whether it runs detached from its request.
    pub(crate) background: bool,
    /// RFC 3339, UTC.
    pub(crate) created_at: String,
    pub(crate) started_at: Option<String>,
    pub(crate) finished_at: Option<String>,
    /// The final answer (completed runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) response: Option<String>,
    /// Tokens the turn used, over all its model calls (completed runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tokens_used: Option<u64>,
    /// Why it failed or was cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<RunErrorView>,
    /// What a `requires_action` run waits for (answer with `POST /runs/{id}/actions`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) required_action: Option<RequiredAction>,
    /// Until when a `requires_action` run waits (RFC 3339, UTC): then it fails as
    /// `action_expired`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) expires_at: Option<String>,
    /// The agent of its session (a session keeps its first turn's agent); absent for a run
    /// without one, or whose session has no turn yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) agent: Option<String>,
}

impl RunView {
    /// The view, naming `agent` (its session's).
    pub(crate) fn with_agent(mut self, agent: Option<String>) -> Self {
        self.agent = agent;
        self
    }
}

/// Why a run failed or was cancelled: the error code its request was (or would have been)
/// answered with (`run_lost` for a run whose replica went away, `cancelled` and
/// `client_disconnected` for cancelled runs), and a message.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RunErrorView {
    pub(crate) code: String,
    pub(crate) message: String,
}

impl From<RunRecord> for RunView {
    fn from(run: RunRecord) -> Self {
        let completed = run.status == agent_storage::RunStatus::Completed;
        Self {
            session_id: run
                .session
                .as_ref()
                .map(|session| session.local().to_owned()),
            status: run.status.into(),
            background: run.background,
            created_at: timestamp(run.created_at),
            started_at: run.started_at.map(timestamp),
            finished_at: run.finished_at.map(timestamp),
            response: if completed { run.output_text } else { None },
            tokens_used: completed.then(|| run.usage.total()),
            error: run.error.map(|error| RunErrorView {
                code: error.code,
                message: error.message,
            }),
            required_action: run
                .action
                .as_ref()
                .and_then(|action| required_action_of(&action.pending)),
            expires_at: run
                .action
                .as_ref()
                .map(|action| timestamp(action.expires_at)),
            agent: None,
            run_id: run.id,
        }
    }
}

/// `GET /sessions/{id}/runs`: a session's runs, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RunList {
    pub(crate) runs: Vec<RunView>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub(crate) next_cursor: Option<String>,
}

/// The text of a cursor continuing a listing after `run`.
pub(crate) fn run_cursor_text(run: &RunRecord) -> String {
    super::listing_cursor(run.created_at, &run.id)
}

/// A cursor [`run_cursor_text`] made.
pub(crate) fn parse_run_cursor(text: &str) -> Result<RunCursor, ApiError> {
    let (created_at, id) =
        super::parse_listing_cursor(text, |id| is_run_id(id).then(|| id.to_owned()))?;
    Ok(RunCursor { created_at, id })
}

/// Whether `text` has the shape of a run id (`run_` and 32 lowercase hex digits).
pub(crate) fn is_run_id(text: &str) -> bool {
    text.strip_prefix("run_").is_some_and(|hex| {
        hex.len() == 32
            && hex
                .bytes()
                .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
    })
}
