//! Redis: the per-session lock (SET NX PX with an owner token, compare-and-delete release, a
//! fencing counter) and the fixed-window rate limiter, each one atomic script.

use std::sync::LazyLock;
use std::time::Duration;

use agent_core::SessionId;
use async_trait::async_trait;
use deadpool_redis::{Config, Connection, Pool, Runtime};
use redis::{RedisError, Script};
use secrecy::{ExposeSecret, SecretString};

use crate::error::{StorageError, bounded};
use crate::model::{LockLease, RateDecision};
use crate::traits::{RateLimiter, SessionLocks};

const BACKEND: &str = "redis";
/// How long a session's fencing counter outlives its last lock.
const FENCE_RETENTION_MS: u64 = 7 * 24 * 3600 * 1000;

/// Takes the lock if free, then advances the session's fencing counter; nil when held.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
            local token = redis.call('INCR', KEYS[2])
            redis.call('PEXPIRE', KEYS[2], ARGV[3])
            return token
          end
          return false",
    )
});

/// Deletes the lock only if the caller still owns it.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then
            return redis.call('DEL', KEYS[1])
          end
          return 0",
    )
});

/// Counts one request in the key's current window; answers {count, milliseconds left}.
static COUNT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local count = redis.call('INCR', KEYS[1])
          local ttl = redis.call('PTTL', KEYS[1])
          if ttl < 0 then
            redis.call('PEXPIRE', KEYS[1], ARGV[1])
            ttl = tonumber(ARGV[1])
          end
          return {count, ttl}",
    )
});

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    pub url: SecretString,
    pub pool_size: usize,
    /// Bound on opening a connection, waiting for one, and on each command.
    pub timeout: Duration,
    /// Prefix of every key, so several deployments (or tests) can share one Redis.
    pub key_prefix: String,
}

/// Locks and rate limits in Redis. Cheap to clone.
#[derive(Clone)]
pub struct RedisCoordination {
    pool: Pool,
    prefix: String,
    timeout: Duration,
}

impl std::fmt::Debug for RedisCoordination {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RedisCoordination")
            .field("prefix", &self.prefix)
            .field("pool", &self.pool.status())
            .finish()
    }
}

fn redis_error(error: RedisError) -> StorageError {
    if error.is_io_error()
        || error.is_connection_refusal()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_unrecoverable_error()
    {
        StorageError::unavailable(BACKEND, error)
    } else {
        StorageError::Backend {
            backend: BACKEND,
            source: error.into(),
        }
    }
}

impl RedisCoordination {
    /// Builds the pool; connections open on first use, so this succeeds while Redis is down.
    pub fn connect(options: &RedisOptions) -> Result<Self, StorageError> {
        let pool = Config::from_url(options.url.expose_secret())
            .builder()
            .map_err(|error| StorageError::Backend {
                backend: BACKEND,
                source: error.into(),
            })?
            .max_size(options.pool_size)
            .wait_timeout(Some(options.timeout))
            .create_timeout(Some(options.timeout))
            .recycle_timeout(Some(options.timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|error| StorageError::Backend {
                backend: BACKEND,
                source: error.into(),
            })?;
        Ok(Self {
            pool,
            prefix: options.key_prefix.clone(),
            timeout: options.timeout,
        })
    }

    async fn connection(&self) -> Result<Connection, StorageError> {
        self.pool
            .get()
            .await
            .map_err(|error| StorageError::unavailable(BACKEND, error))
    }

    /// The readiness check: PING.
    pub async fn health_check(&self) -> Result<(), String> {
        let ping = bounded(BACKEND, self.timeout, async {
            let mut connection = self.connection().await?;
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
                .map_err(redis_error)
        });
        match ping.await {
            Ok(answer) if answer == "PONG" => Ok(()),
            Ok(answer) => Err(format!("PING answered {answer:?}")),
            Err(error) => Err(crate::error_chain(&error)),
        }
    }

    /// Connection-pool figures: (connections open, idle, maximum).
    pub fn pool_status(&self) -> (usize, usize, usize) {
        let status = self.pool.status();
        (status.size, status.available, status.max_size)
    }

    fn lock_key(&self, session: &SessionId) -> String {
        format!("{}lock:{session}", self.prefix)
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

#[async_trait]
impl SessionLocks for RedisCoordination {
    #[tracing::instrument(skip(self), fields(backend = BACKEND))]
    async fn try_acquire(
        &self,
        session: &SessionId,
        ttl: Duration,
    ) -> Result<Option<LockLease>, StorageError> {
        let owner = uuid::Uuid::new_v4().to_string();
        let token: Option<u64> = bounded(BACKEND, self.timeout, async {
            let mut connection = self.connection().await?;
            ACQUIRE
                .key(self.lock_key(session))
                .key(format!("{}fence:{session}", self.prefix))
                .arg(&owner)
                .arg(millis(ttl))
                .arg(FENCE_RETENTION_MS)
                .invoke_async(&mut connection)
                .await
                .map_err(redis_error)
        })
        .await?;
        Ok(token.map(|fencing_token| LockLease {
            session: session.clone(),
            owner,
            fencing_token,
            ttl,
        }))
    }

    #[tracing::instrument(skip(self, lease), fields(backend = BACKEND, session = %lease.session))]
    async fn release(&self, lease: &LockLease) -> Result<bool, StorageError> {
        let deleted: u64 = bounded(BACKEND, self.timeout, async {
            let mut connection = self.connection().await?;
            RELEASE
                .key(self.lock_key(&lease.session))
                .arg(&lease.owner)
                .invoke_async(&mut connection)
                .await
                .map_err(redis_error)
        })
        .await?;
        Ok(deleted == 1)
    }
}

#[async_trait]
impl RateLimiter for RedisCoordination {
    #[tracing::instrument(skip(self), fields(backend = BACKEND))]
    async fn check(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
    ) -> Result<RateDecision, StorageError> {
        let (count, remaining_ms): (u64, u64) = bounded(BACKEND, self.timeout, async {
            let mut connection = self.connection().await?;
            COUNT
                .key(format!("{}rate:{key}", self.prefix))
                .arg(millis(window))
                .invoke_async(&mut connection)
                .await
                .map_err(redis_error)
        })
        .await?;
        Ok(if count <= u64::from(limit) {
            RateDecision::Allowed {
                remaining: limit - count as u32,
            }
        } else {
            RateDecision::Limited {
                retry_after: Duration::from_millis(remaining_ms),
            }
        })
    }
}
