//! Storage behind traits: the conversation store and idempotency records (Postgres, durable), the
//! per-session lock and the rate limiter (Redis, shared, may be lost), and in-memory
//! implementations of all four for the embedded default and fast tests.
//!
//! No diesel or redis type appears in this crate's public API: callers see the traits, the
//! domain types of `agent-core`, and [`StorageError`].

mod background;
mod error;
mod lock;
mod memory;
mod model;
mod postgres;
mod redis;
mod retention;
mod traits;

pub use background::BackgroundWork;
pub use error::StorageError;
pub use lock::{LockGuard, acquire_lock};
pub use memory::MemoryStorage;
pub use model::{
    ACTION_EXPIRED, Answered, ClaimedRun, DailyUsage, Ended, IdempotencyBegin,
    IdempotencyCompletion, LockLease, LoggedEvent, NewRun, OpenedSession, QueuedRun, RUN_LOST,
    RateDecision, ResponseParameters, ResponseRecord, RunAction, RunAnswer, RunCompletion,
    RunCursor, RunEnd, RunError, RunOrigin, RunRecord, RunStatus, SessionCursor, SessionInfo,
    SessionSummary, StoredMessage, StoredResponse, SummaryRecord, TurnRecord, WebhookEvent,
};
pub use postgres::{PostgresOptions, PostgresStore, latest_schema_version};
pub use redis::{RedisCoordination, RedisOptions};
pub use retention::Sweep;
pub use traits::{
    ConversationStore, EventLog, IdempotencyStore, RateLimiter, RunStore, SessionLocks,
    WebhookOutbox,
};

/// The most messages one history read may return.
pub const MAX_HISTORY_WINDOW: usize = 1000;
