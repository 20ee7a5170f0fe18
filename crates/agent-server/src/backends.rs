//! Builds the storage backends from the settings: Postgres for conversations and idempotency,
//! Redis for locks and rate limits, in memory for whatever is not configured (dev profile only;
//! agent-config already refused a production profile without them). Registers their checks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_config::{HealthSettings, StorageSettings};
use agent_health::{Criticality, HealthCheck};
use agent_storage::{
    ConversationStore, IdempotencyStore, MemoryStorage, PostgresOptions, PostgresStore,
    RateLimiter, RedisCoordination, RedisOptions, SessionLocks,
};

use crate::error::StartupError;

/// The storage the API runs on.
#[derive(Debug, Clone)]
pub struct Backends {
    pub conversations: Arc<dyn ConversationStore>,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub locks: Arc<dyn SessionLocks>,
    pub rate_limiter: Arc<dyn RateLimiter>,
}

/// Connects (and migrates) what is configured; answers the backends and their readiness checks.
pub(crate) async fn build(
    storage: &StorageSettings,
    health: &HealthSettings,
) -> Result<(Backends, Vec<HealthCheck>), StartupError> {
    let memory = Arc::new(MemoryStorage::new());
    let mut checks = Vec::new();
    let (conversations, idempotency): (Arc<dyn ConversationStore>, Arc<dyn IdempotencyStore>) =
        match postgres(storage)? {
            Some(store) => {
                if storage.run_migrations {
                    migrate_with_retries(&store, storage.startup_timeout).await?;
                }
                let checked = store.clone();
                checks.push(HealthCheck::new(
                    "postgres",
                    Criticality::Critical,
                    health.check_timeout,
                    move || {
                        let store = checked.clone();
                        async move { store.health_check().await }
                    },
                ));
                let store = Arc::new(store);
                (store.clone(), store)
            }
            None => (memory.clone(), memory.clone()),
        };
    let (locks, rate_limiter): (Arc<dyn SessionLocks>, Arc<dyn RateLimiter>) = match redis(storage)?
    {
        Some(redis) => {
            let checked = redis.clone();
            // Optional: while Redis is down the instance stays ready (degraded) and /agent answers
            // 503 itself, rather than every replica leaving the load balancer at once.
            checks.push(HealthCheck::new(
                "redis",
                Criticality::Optional,
                health.check_timeout,
                move || {
                    let redis = checked.clone();
                    async move { redis.health_check().await }
                },
            ));
            let redis = Arc::new(redis);
            (redis.clone(), redis)
        }
        None => (memory.clone(), memory),
    };
    Ok((
        Backends {
            conversations,
            idempotency,
            locks,
            rate_limiter,
        },
        checks,
    ))
}

/// `agent-server migrate`: runs the pending migrations; answers the versions applied.
pub async fn migrate(storage: &StorageSettings) -> Result<Vec<String>, StartupError> {
    let store = postgres(storage)?.ok_or(StartupError::NoDatabase)?;
    migrate_with_retries(&store, storage.startup_timeout).await
}

fn postgres(storage: &StorageSettings) -> Result<Option<PostgresStore>, StartupError> {
    let Some(url) = &storage.database_url else {
        return Ok(None);
    };
    let options = PostgresOptions {
        url: url.clone(),
        pool_size: storage.pool_size,
        connect_timeout: storage.connect_timeout,
        statement_timeout: storage.statement_timeout,
    };
    PostgresStore::connect(&options)
        .map(Some)
        .map_err(|source| StartupError::Storage {
            what: "connect to Postgres",
            source,
        })
}

fn redis(storage: &StorageSettings) -> Result<Option<RedisCoordination>, StartupError> {
    let Some(url) = &storage.redis_url else {
        return Ok(None);
    };
    let options = RedisOptions {
        url: url.clone(),
        pool_size: storage.redis_pool_size,
        timeout: storage.redis_timeout,
        key_prefix: storage.redis_key_prefix.clone(),
    };
    RedisCoordination::connect(&options)
        .map(Some)
        .map_err(|source| StartupError::Storage {
            what: "connect to Redis",
            source,
        })
}

/// Migrates, retrying while Postgres is unavailable (it may start after us) for up to `patience`.
async fn migrate_with_retries(
    store: &PostgresStore,
    patience: Duration,
) -> Result<Vec<String>, StartupError> {
    let deadline = Instant::now() + patience;
    let mut pause = Duration::from_millis(200);
    loop {
        match store.migrate().await {
            Ok(applied) => {
                if applied.is_empty() {
                    tracing::info!(version = %agent_storage::latest_schema_version(), "database schema is up to date");
                } else {
                    tracing::info!(?applied, "applied database migrations");
                }
                return Ok(applied);
            }
            Err(error) if error.is_unavailable() && Instant::now() + pause < deadline => {
                tracing::warn!(error = %crate::error_chain(&error), retry_in = ?pause, "Postgres is not available yet");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(source) => {
                return Err(StartupError::Storage {
                    what: "migrate the database",
                    source,
                });
            }
        }
    }
}
