//! Postgres: conversations and idempotency records, through diesel-async on a deadpool pool.
//! Migrations are embedded in the binary and run under an advisory lock.

mod actions;
mod conversations;
mod idempotency;
mod queue;
mod runs;
mod schema;
mod statements;
mod sweep;
mod webhooks;

use std::time::Duration;

use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::{ConnectionError, QueryableByName};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::{Object, Pool, PoolError};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures_util::FutureExt;
use secrecy::{ExposeSecret, SecretString};

use crate::error::{StorageError, bounded};

const BACKEND: &str = "postgres";
// Embedded at compile time: after adding a migration, touch this file so an incremental build
// embeds it (a clean build always does).
const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");
/// The advisory lock that serialises migrations across replicas starting together.
const MIGRATION_LOCK: i64 = 0x6167_656e_745f_6462; // "agent_db"

/// How to reach Postgres.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    pub url: SecretString,
    pub pool_size: usize,
    /// Bound on opening a connection and on waiting for a free one.
    pub connect_timeout: Duration,
    /// Server-side bound on each statement (`statement_timeout`).
    pub statement_timeout: Duration,
}

/// The Postgres store: a connection pool. Cheap to clone.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool<AsyncPgConnection>,
    url: SecretString,
    /// Client-side bound on one store call, past which it is `Unavailable`.
    call_limit: Duration,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PostgresStore")
            .field("pool", &self.pool.status())
            .finish()
    }
}

/// The newest migration embedded in this binary.
pub fn latest_schema_version() -> String {
    MigrationSource::<Pg>::migrations(&MIGRATIONS)
        .ok()
        .and_then(|migrations| {
            migrations
                .last()
                .map(|last| last.name().version().to_string())
        })
        .unwrap_or_default()
}

#[derive(QueryableByName)]
struct VersionRow {
    #[diesel(sql_type = Nullable<Text>)]
    version: Option<String>,
}

impl PostgresStore {
    /// Builds the pool; connections open on first use, so this succeeds while Postgres is down.
    pub fn connect(options: &PostgresOptions) -> Result<Self, StorageError> {
        let connect_timeout = options.connect_timeout;
        let statement_ms = options.statement_timeout.as_millis();
        let mut config = ManagerConfig::<AsyncPgConnection>::default();
        // Broken connections are detected by diesel-async and dropped; no ping per checkout.
        config.recycling_method = RecyclingMethod::Fast;
        config.custom_setup = Box::new(move |url| {
            let url = url.to_owned();
            async move {
                let connect = AsyncPgConnection::establish(&url);
                let mut connection = tokio::time::timeout(connect_timeout, connect)
                    .await
                    .map_err(|_| {
                        ConnectionError::BadConnection("connect timed out".to_owned())
                    })??;
                connection
                    .batch_execute(&format!("SET statement_timeout = {statement_ms}"))
                    .await
                    .map_err(ConnectionError::CouldntSetupConfiguration)?;
                Ok(connection)
            }
            .boxed()
        });
        let manager = AsyncDieselConnectionManager::new_with_config(
            options.url.expose_secret().to_owned(),
            config,
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .wait_timeout(Some(connect_timeout))
            .create_timeout(Some(connect_timeout))
            .recycle_timeout(Some(connect_timeout))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|error| StorageError::Backend {
                backend: BACKEND,
                source: error.into(),
            })?;
        Ok(Self {
            pool,
            url: options.url.clone(),
            call_limit: connect_timeout + options.statement_timeout + Duration::from_secs(1),
        })
    }

    /// The advisory lock (a transaction's) a replica holds while it sweeps a batch of idle
    /// sessions, so one replica sweeps at a time.
    pub const RETENTION_LOCK: i64 = 0x6167_656e_745f_7277; // "agent_rw"

    /// Runs the pending embedded migrations under a Postgres advisory lock, so replicas starting
    /// together run each migration exactly once. Answers the versions it applied.
    pub async fn migrate(&self) -> Result<Vec<String>, StorageError> {
        let url = self.url.expose_secret().to_owned();
        let task = tokio::task::spawn_blocking(move || {
            let mut connection =
                <AsyncConnectionWrapper<AsyncPgConnection> as diesel::Connection>::establish(&url)
                    .map_err(|error| StorageError::unavailable(BACKEND, error))?;
            let lock = |connection: &mut AsyncConnectionWrapper<AsyncPgConnection>, sql| {
                let query = diesel::sql_query(sql).bind::<BigInt, _>(MIGRATION_LOCK);
                diesel::RunQueryDsl::execute(query, connection)
            };
            lock(&mut connection, "SELECT pg_advisory_lock($1)").map_err(query_error)?;
            let applied = connection
                .run_pending_migrations(MIGRATIONS)
                .map(|versions| versions.iter().map(ToString::to_string).collect())
                .map_err(|source| StorageError::Backend {
                    backend: BACKEND,
                    source,
                });
            let unlocked = lock(&mut connection, "SELECT pg_advisory_unlock($1)");
            let applied = applied?;
            unlocked.map_err(query_error)?;
            Ok(applied)
        });
        task.await.map_err(|error| StorageError::Backend {
            backend: BACKEND,
            source: error.into(),
        })?
    }

    /// The newest applied migration, or `None` on an empty database.
    pub async fn schema_version(&self) -> Result<Option<String>, StorageError> {
        bounded(BACKEND, self.call_limit, async {
            let mut connection = self.connection().await?;
            let exists: VersionRow = diesel::sql_query(
                "SELECT to_regclass('__diesel_schema_migrations')::text AS version",
            )
            .get_result(&mut connection)
            .await
            .map_err(query_error)?;
            if exists.version.is_none() {
                return Ok(None);
            }
            let row: VersionRow =
                diesel::sql_query("SELECT MAX(version) AS version FROM __diesel_schema_migrations")
                    .get_result(&mut connection)
                    .await
                    .map_err(query_error)?;
            Ok(row.version)
        })
        .await
    }

    /// The readiness check: Postgres answers and the schema is at this binary's version.
    pub async fn health_check(&self) -> Result<(), StorageError> {
        let expected = latest_schema_version();
        match self.schema_version().await? {
            Some(version) if version >= expected => Ok(()),
            Some(found) => Err(StorageError::SchemaBehind { found, expected }),
            None => Err(StorageError::NotMigrated),
        }
    }

    /// Connection-pool figures: (connections open, idle, maximum).
    pub fn pool_status(&self) -> (usize, usize, usize) {
        let status = self.pool.status();
        (status.size, status.available, status.max_size)
    }

    async fn connection(&self) -> Result<Object<AsyncPgConnection>, StorageError> {
        self.pool.get().await.map_err(pool_error)
    }
}

fn pool_error(error: PoolError) -> StorageError {
    match error {
        PoolError::Closed | PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_) => {
            StorageError::Backend {
                backend: BACKEND,
                source: error.into(),
            }
        }
        _ => StorageError::unavailable(BACKEND, error),
    }
}

/// Connection failures, timeouts and server shutdowns are `Unavailable`; the rest is `Backend`.
pub(crate) fn query_error(error: DieselError) -> StorageError {
    let unavailable = match &error {
        DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _)
        | DieselError::DatabaseError(DatabaseErrorKind::UnableToSendCommand, _)
        | DieselError::BrokenTransactionManager => true,
        DieselError::DatabaseError(_, information) => {
            let message = information.message();
            [
                "statement timeout",
                "terminating connection",
                "shutting down",
                "starting up",
            ]
            .iter()
            .any(|needle| message.contains(needle))
        }
        _ => false,
    };
    if unavailable {
        StorageError::unavailable(BACKEND, error)
    } else {
        StorageError::Backend {
            backend: BACKEND,
            source: error.into(),
        }
    }
}
