//! Redis: the per-session lock (SET NX PX with an owner token, compare-and-delete release, a
//! fencing counter) and the fixed-window rate limiter, each one atomic script.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use agent_core::SessionId;
use async_trait::async_trait;
use deadpool::managed::{self, Metrics, Object, RecycleResult};
use deadpool_redis::Runtime;
use redis::aio::MultiplexedConnection;
use redis::io::tcp::TcpSettings;
use redis::{RedisError, Script};
use secrecy::{ExposeSecret, SecretString};

use crate::background::BackgroundWork;
use crate::error::{StorageError, bounded};
use crate::model::{LockLease, LoggedEvent, RateDecision};
use crate::traits::{EventLog, RateLimiter, SessionLocks};

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

/// Appends events to a run's log (a stream): ARGV = keep (ms), cap, then id and data of each
/// event. An id the stream already holds fails its XADD, which is skipped (a retried append).
static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"for index = 3, #ARGV, 2 do
            redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], ARGV[index], 'e', ARGV[index + 1])
          end
          redis.call('PEXPIRE', KEYS[1], ARGV[1])
          return 1",
    )
});

/// Connections checked out again within this time are trusted without a PING.
const VERIFY_AFTER_IDLE: Duration = Duration::from_secs(5);

/// deadpool-redis's manager with a cheaper recycle. deadpool-redis PINGs on every checkout, one
/// extra round trip per command; here a connection is PINGed only when it sat idle for
/// [`VERIFY_AFTER_IDLE`], and a connection whose command failed is discarded instead of being
/// returned (see [`RedisCoordination::run`]).
#[derive(Debug)]
struct Manager {
    inner: deadpool_redis::Manager,
}

impl managed::Manager for Manager {
    type Type = MultiplexedConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<MultiplexedConnection, RedisError> {
        self.inner.create().await
    }

    async fn recycle(
        &self,
        connection: &mut MultiplexedConnection,
        metrics: &Metrics,
    ) -> RecycleResult<RedisError> {
        if metrics.last_used() < VERIFY_AFTER_IDLE {
            return Ok(());
        }
        self.inner.recycle(connection, metrics).await
    }
}

type Pool = managed::Pool<Manager>;

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

/// Locks and rate limits in Redis. Cheap to clone (clones share the pool and its connection).
#[derive(Clone)]
pub struct RedisCoordination {
    pool: Pool,
    /// The pooled connection concurrent commands share. A multiplexed connection is made to be
    /// shared: commands in flight together go out in one write and their replies come back in
    /// one read, where a connection per command costs a write and a read each.
    shared: Arc<tokio::sync::Mutex<Option<Arc<Object<Manager>>>>>,
    prefix: String,
    timeout: Duration,
    background: Arc<BackgroundWork>,
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
        let backend_error = |error: RedisError| StorageError::Backend {
            backend: BACKEND,
            source: error.into(),
        };
        // Commands of concurrent requests share a multiplexed connection: without TCP_NODELAY
        // a command written while another is unanswered waits for its ACK (Nagle).
        let info = redis::IntoConnectionInfo::into_connection_info(options.url.expose_secret())
            .map_err(backend_error)?;
        let info = info.set_tcp_settings(TcpSettings::default().set_nodelay(true));
        let inner = deadpool_redis::Manager::new(info).map_err(backend_error)?;
        let pool = Pool::builder(Manager { inner })
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
            shared: Arc::new(tokio::sync::Mutex::new(None)),
            prefix: options.key_prefix.clone(),
            timeout: options.timeout,
            background: Arc::default(),
        })
    }

    /// Runs background lock releases in `work` (shared by the workers of a process) instead of
    /// slots of its own.
    #[must_use]
    pub fn with_background(mut self, work: Arc<BackgroundWork>) -> Self {
        self.background = work;
        self
    }

    /// Runs one command on the shared connection, bounded by the timeout. A connection whose
    /// command failed at the connection level is dropped, not shared or pooled again.
    async fn run<T>(
        &self,
        command: impl AsyncFnOnce(&mut MultiplexedConnection) -> Result<T, RedisError>,
    ) -> Result<T, StorageError> {
        let object = self.checkout().await?;
        self.run_on(object, command).await
    }

    /// The shared connection, within the command timeout. Failing here, a command never
    /// reached Redis.
    async fn checkout(&self) -> Result<Arc<Object<Manager>>, StorageError> {
        bounded(BACKEND, self.timeout, self.shared_connection()).await
    }

    /// Runs `command` on a checked-out connection; a connection that fails is discarded.
    async fn run_on<T>(
        &self,
        object: Arc<Object<Manager>>,
        command: impl AsyncFnOnce(&mut MultiplexedConnection) -> Result<T, RedisError>,
    ) -> Result<T, StorageError> {
        let mut connection = MultiplexedConnection::clone(&object);
        match tokio::time::timeout(self.timeout, command(&mut connection)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                if error.is_io_error()
                    || error.is_connection_dropped()
                    || error.is_unrecoverable_error()
                    || error.is_timeout()
                {
                    self.discard(object).await;
                }
                Err(redis_error(error))
            }
            // No answer in time: the connection may be half-open; stop sharing it.
            Err(_) => {
                self.discard(object).await;
                Err(StorageError::unavailable(
                    BACKEND,
                    format!("no answer within {:?}", self.timeout),
                ))
            }
        }
    }

    /// The shared connection, checked out of the pool when there is none. The slot stays
    /// locked during the checkout, so concurrent first commands wait for one checkout instead of
    /// each taking (and waiting for) a pooled connection of its own.
    async fn shared_connection(&self) -> Result<Arc<Object<Manager>>, StorageError> {
        let mut slot = self.shared.lock().await;
        if let Some(object) = slot.as_ref() {
            return Ok(Arc::clone(object));
        }
        let object = Arc::new(
            self.pool
                .get()
                .await
                .map_err(|error| StorageError::unavailable(BACKEND, error))?,
        );
        *slot = Some(Arc::clone(&object));
        Ok(object)
    }

    /// Stops sharing a broken connection; the last user drops it out of the pool.
    async fn discard(&self, object: Arc<Object<Manager>>) {
        {
            let mut slot = self.shared.lock().await;
            if slot
                .as_ref()
                .is_some_and(|shared| Arc::ptr_eq(shared, &object))
            {
                *slot = None;
            }
        }
        if let Ok(object) = Arc::try_unwrap(object) {
            drop(Object::take(object));
        }
    }

    /// The readiness check: PING.
    pub async fn health_check(&self) -> Result<(), StorageError> {
        let ping =
            self.run(async |connection| redis::cmd("PING").query_async::<String>(connection).await);
        match ping.await? {
            answer if answer == "PONG" => Ok(()),
            answer => Err(StorageError::Backend {
                backend: BACKEND,
                source: format!("PING answered {answer:?}").into(),
            }),
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

    fn log_key(&self, run: &str) -> String {
        format!("{}events:{run}", self.prefix)
    }
}

/// A log event's stream entry id: its number, then 1 (so that event 0 is above `0-0`).
fn entry_id(seq: u64) -> String {
    format!("{seq}-1")
}

#[async_trait]
impl EventLog for RedisCoordination {
    #[tracing::instrument(level = "debug", skip(self, events), fields(backend = BACKEND))]
    async fn append(
        &self,
        run: &str,
        events: &[LoggedEvent],
        cap: usize,
        keep: Duration,
    ) -> Result<(), StorageError> {
        let key = self.log_key(run);
        self.run(async |connection| {
            let mut invocation = APPEND.key(&key);
            invocation.arg(millis(keep)).arg(cap);
            for event in events {
                invocation.arg(entry_id(event.seq)).arg(&event.data);
            }
            invocation.invoke_async::<i64>(connection).await
        })
        .await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn read(
        &self,
        run: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, StorageError> {
        let key = self.log_key(run);
        let start = after.map_or_else(|| "-".to_owned(), |after| format!("({}", entry_id(after)));
        type Entries = Vec<(String, Vec<(String, String)>)>;
        let entries: Entries = self
            .run(async |connection| {
                redis::cmd("XRANGE")
                    .arg(&key)
                    .arg(&start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(limit)
                    .query_async(connection)
                    .await
            })
            .await?;
        entries
            .into_iter()
            .map(|(id, fields)| {
                let seq = id
                    .split_once('-')
                    .and_then(|(seq, _)| seq.parse().ok())
                    .ok_or_else(|| StorageError::Corrupt(format!("log entry id {id}")))?;
                let data = fields
                    .into_iter()
                    .find_map(|(name, value)| (name == "e").then_some(value))
                    .ok_or_else(|| StorageError::Corrupt(format!("log entry {id} has no event")))?;
                Ok(LoggedEvent { seq, data })
            })
            .collect()
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

#[async_trait]
impl SessionLocks for RedisCoordination {
    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn try_acquire(
        &self,
        session: &SessionId,
        ttl: Duration,
    ) -> Result<Option<LockLease>, StorageError> {
        let owner = uuid::Uuid::new_v4().to_string();
        // Without a connection the script never reached Redis: nothing to release. (Every
        // failed acquire used to leave a release retrying for the lock's whole TTL, so a Redis
        // outage under load held memory without bound.)
        let object = self.checkout().await?;
        let token: Option<u64> = self
            .run_on(object, async |connection| {
                ACQUIRE
                    .key(self.lock_key(session))
                    .key(format!("{}fence:{session}", self.prefix))
                    .arg(&owner)
                    .arg(millis(ttl))
                    .arg(FENCE_RETENTION_MS)
                    .invoke_async(connection)
                    .await
            })
            .await
            .inspect_err(|_| {
                // The script may have run with its answer lost (a timeout, Redis stopping): the
                // lock would then be held by no one until its TTL. Release it by owner.
                let orphan = LockLease {
                    session: session.clone(),
                    owner: owner.clone(),
                    fencing_token: 0,
                    ttl,
                };
                let locks: Arc<dyn SessionLocks> = Arc::new(self.clone());
                crate::lock::release_in_background(&locks, orphan, Duration::ZERO);
            })?;
        Ok(token.map(|fencing_token| LockLease {
            session: session.clone(),
            owner,
            fencing_token,
            ttl,
        }))
    }

    #[tracing::instrument(level = "debug", skip(self, lease), fields(backend = BACKEND, session = %lease.session))]
    async fn release(&self, lease: &LockLease) -> Result<bool, StorageError> {
        let deleted: u64 = self
            .run(async |connection| {
                RELEASE
                    .key(self.lock_key(&lease.session))
                    .arg(&lease.owner)
                    .invoke_async(connection)
                    .await
            })
            .await?;
        Ok(deleted == 1)
    }

    fn background(&self) -> &BackgroundWork {
        &self.background
    }
}

#[async_trait]
impl RateLimiter for RedisCoordination {
    #[tracing::instrument(level = "debug", skip(self), fields(backend = BACKEND))]
    async fn check(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
    ) -> Result<RateDecision, StorageError> {
        let (count, remaining_ms): (u64, u64) = self
            .run(async |connection| {
                COUNT
                    .key(format!("{}rate:{key}", self.prefix))
                    .arg(millis(window))
                    .invoke_async(connection)
                    .await
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
