//! The one error type of the storage layer, with variants a caller can act on.

/// A boxed source error from a driver; the driver's type stays private.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The session does not exist.
    #[error("session {0} was not found")]
    SessionNotFound(String),
    /// Another writer appended first: the caller's view of the session is stale.
    #[error("session {session} changed: expected next sequence {expected}, found {actual}")]
    Conflict {
        session: String,
        expected: u64,
        actual: u64,
    },
    /// The session lock is held by someone else and the wait ran out.
    #[error("session {0} is busy with another request")]
    Locked(String),
    /// The session has an active run (queued or in progress): this one.
    #[error("session {session} has an active run {run}")]
    SessionBusy { session: String, run: String },
    /// The queue of background runs is full: for this owner (`per_owner`), or for everyone.
    #[error("the run queue is full ({queued} queued{})", if *per_owner { " by this caller" } else { "" })]
    QueueFull { per_owner: bool, queued: usize },
    /// The run is no longer in progress (cancelled, or failed as lost): its turn was not stored.
    #[error("run {run} is {status}, no longer in progress")]
    RunEnded {
        run: String,
        status: crate::model::RunStatus,
    },
    /// The backend cannot be reached, timed out, or dropped the connection; retrying later may
    /// work. The API answers 503.
    #[error("{backend} is unavailable")]
    Unavailable {
        backend: &'static str,
        #[source]
        source: BoxError,
    },
    /// The database has no schema yet (readiness fails until `agent-server migrate` runs).
    #[error("the schema is not migrated")]
    NotMigrated,
    /// The database's schema is behind this binary's (as above).
    #[error("the schema version {found} is behind {expected}")]
    SchemaBehind { found: String, expected: String },
    /// Stored data that cannot be read back (a bug or a manual edit).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// Any other backend failure.
    #[error("{backend} failed")]
    Backend {
        backend: &'static str,
        #[source]
        source: BoxError,
    },
}

impl StorageError {
    /// Whether the failure is the backend being down or slow (as opposed to a logical error).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    pub(crate) fn unavailable(backend: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Unavailable {
            backend,
            source: source.into(),
        }
    }
}

/// Bounds a backend call: past `limit` it is [`StorageError::Unavailable`], so a hung server
/// never hangs a request.
pub(crate) async fn bounded<T>(
    backend: &'static str,
    limit: std::time::Duration,
    operation: impl Future<Output = Result<T, StorageError>>,
) -> Result<T, StorageError> {
    match tokio::time::timeout(limit, operation).await {
        Ok(result) => result,
        Err(_) => Err(StorageError::unavailable(
            backend,
            format!("no answer within {limit:?}"),
        )),
    }
}
