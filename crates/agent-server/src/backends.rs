//! Builds the storage backends from the settings: Postgres for conversations and idempotency,
//! Redis for locks and rate limits, in memory for whatever is not configured (dev profile only;
//! agent-config already refused a production profile without them). Registers their checks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_config::{HealthSettings, StorageSettings};
use agent_health::{Criticality, HealthCheck};
use agent_storage::{
    BackgroundWork, ConversationStore, EventLog, IdempotencyStore, MemoryStorage, PostgresOptions,
    PostgresStore, RateLimiter, RedisCoordination, RedisOptions, RunStore, SessionLocks,
    WebhookOutbox,
};

use crate::error::StartupError;

/// The storage the API runs on.
#[derive(Debug, Clone)]
pub struct Backends {
    pub conversations: Arc<dyn ConversationStore>,
    /// Runs live with the conversations (a completed run is written by its turn's store).
    pub runs: Arc<dyn RunStore>,
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// Background runs' webhook events, written with their terminal states (with the runs).
    pub webhooks: Arc<dyn WebhookOutbox>,
    /// Runs' events: Redis (shared by the replicas) when configured.
    pub events: Arc<dyn EventLog>,
    pub locks: Arc<dyn SessionLocks>,
    pub rate_limiter: Arc<dyn RateLimiter>,
    /// The slots of the process's background work (lock releases, abandoned idempotency
    /// claims), shared by every worker's stores.
    pub background: Arc<BackgroundWork>,
}

/// What each worker builds its own storage clients from. A connection's driver task runs on the
/// thread that opened it, so a pool shared by all workers makes most queries hop threads (two
/// wake-ups per round trip); a pool per worker keeps each query on its worker's thread. In-memory
/// storage is one store shared by all.
#[derive(Debug, Clone)]
pub(crate) struct BackendsRecipe {
    postgres: Option<PostgresOptions>,
    redis: Option<RedisOptions>,
    memory: Arc<MemoryStorage>,
    background: Arc<BackgroundWork>,
}

impl BackendsRecipe {
    fn new(storage: &StorageSettings) -> Self {
        let background = Arc::new(BackgroundWork::default());
        Self {
            postgres: postgres_options(storage),
            redis: storage.redis_url.as_ref().map(|url| RedisOptions {
                url: url.clone(),
                pool_size: storage.redis_pool_size,
                timeout: storage.redis_timeout,
                key_prefix: storage.redis_key_prefix.clone(),
            }),
            memory: Arc::new(MemoryStorage::new().with_background(Arc::clone(&background))),
            background,
        }
    }

    /// The backends of one of `workers` workers: each gets its share of the configured pool
    /// sizes (at least one connection).
    pub(crate) fn for_worker(&self, workers: usize) -> Result<Backends, StartupError> {
        let share = |size: usize| size.div_ceil(workers.max(1)).max(1);
        let postgres = self
            .postgres
            .as_ref()
            .map(|options| {
                connect_postgres(&PostgresOptions {
                    pool_size: share(options.pool_size),
                    ..options.clone()
                })
            })
            .transpose()?;
        let redis = self
            .redis
            .as_ref()
            .map(|options| {
                self.connect_redis(&RedisOptions {
                    pool_size: share(options.pool_size),
                    ..options.clone()
                })
            })
            .transpose()?;
        Ok(self.assemble(postgres, redis))
    }

    fn assemble(
        &self,
        postgres: Option<PostgresStore>,
        redis: Option<RedisCoordination>,
    ) -> Backends {
        // Everything Postgres holds comes from the one store (or memory).
        let (conversations, runs, idempotency, webhooks) = match postgres {
            Some(store) => {
                let store = Arc::new(store);
                durable(&store)
            }
            None => durable(&self.memory),
        };
        let (locks, rate_limiter, events): (
            Arc<dyn SessionLocks>,
            Arc<dyn RateLimiter>,
            Arc<dyn EventLog>,
        ) = match redis {
            Some(redis) => {
                let redis = Arc::new(redis);
                (redis.clone(), redis.clone(), redis)
            }
            None => (
                self.memory.clone(),
                self.memory.clone(),
                self.memory.clone(),
            ),
        };
        Backends {
            conversations,
            runs,
            idempotency,
            webhooks,
            events,
            locks,
            rate_limiter,
            background: Arc::clone(&self.background),
        }
    }

    fn connect_redis(&self, options: &RedisOptions) -> Result<RedisCoordination, StartupError> {
        RedisCoordination::connect(options)
            .map(|redis| redis.with_background(Arc::clone(&self.background)))
            .map_err(|source| StartupError::Storage {
                what: "connect to Redis",
                source,
            })
    }
}

/// Connections the process-wide backends keep: they serve the readiness checks, migrations and
/// embedders; requests use the workers' own pools.
const SHARED_POOL_SIZE: usize = 2;

/// Connects (and migrates) what is configured. Answers the process-wide backends, their readiness
/// checks, and the recipe each worker builds its own backends from.
pub(crate) async fn build(
    storage: &StorageSettings,
    health: &HealthSettings,
) -> Result<(Backends, Vec<HealthCheck>, BackendsRecipe), StartupError> {
    let recipe = BackendsRecipe::new(storage);
    let mut checks = Vec::new();
    let postgres = match &recipe.postgres {
        Some(options) => {
            let store = connect_postgres(&PostgresOptions {
                pool_size: SHARED_POOL_SIZE,
                ..options.clone()
            })?;
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
            Some(store)
        }
        None => None,
    };
    let redis = match &recipe.redis {
        Some(options) => {
            let redis = recipe.connect_redis(&RedisOptions {
                pool_size: SHARED_POOL_SIZE,
                ..options.clone()
            })?;
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
            Some(redis)
        }
        None => None,
    };
    let backends = recipe.assemble(postgres, redis);
    Ok((backends, checks, recipe))
}

/// `agent-server migrate`: runs the pending migrations; answers the versions applied.
pub async fn migrate(storage: &StorageSettings) -> Result<Vec<String>, StartupError> {
    let options = postgres_options(storage).ok_or(StartupError::NoDatabase)?;
    let store = connect_postgres(&PostgresOptions {
        pool_size: 1,
        ..options
    })?;
    migrate_with_retries(&store, storage.startup_timeout).await
}

fn postgres_options(storage: &StorageSettings) -> Option<PostgresOptions> {
    storage.database_url.as_ref().map(|url| PostgresOptions {
        url: url.clone(),
        pool_size: storage.pool_size,
        connect_timeout: storage.connect_timeout,
        statement_timeout: storage.statement_timeout,
    })
}

fn connect_postgres(options: &PostgresOptions) -> Result<PostgresStore, StartupError> {
    PostgresStore::connect(options).map_err(|source| StartupError::Storage {
        what: "connect to Postgres",
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

/// The stores Postgres (or memory) holds, from the one store that holds them all.
fn durable<S>(store: &Arc<S>) -> DurableStores
where
    S: ConversationStore + RunStore + IdempotencyStore + WebhookOutbox + 'static,
{
    (store.clone(), store.clone(), store.clone(), store.clone())
}

type DurableStores = (
    Arc<dyn ConversationStore>,
    Arc<dyn RunStore>,
    Arc<dyn IdempotencyStore>,
    Arc<dyn WebhookOutbox>,
);
