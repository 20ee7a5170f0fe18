//! Backends that are down, stopped mid-test, or drop connections: typed `Unavailable` errors,
//! never a panic or a hang, and service resumes when they return.

use std::sync::Arc;
use std::time::Duration;

use agent_core::SessionId;
use agent_storage::{
    BackgroundWork, ConversationStore, PostgresStore, RateLimiter, RedisCoordination, RedisOptions,
    SessionLocks, acquire_lock,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn id() -> SessionId {
    SessionId::parse("outage").unwrap()
}

/// The lock of [`id`], taken as soon as it is free within 10 s (a TTL here is 60 s).
async fn acquired_within(
    locks: &dyn SessionLocks,
    ttl: Duration,
) -> Result<agent_storage::LockLease, tokio::time::error::Elapsed> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(Some(lease)) = locks.try_acquire(&id(), ttl).await {
                return lease;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_postgres_is_unavailable() {
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", closed_port());
    let store = PostgresStore::connect(&test_support::postgres_options(&url)).unwrap();
    let error = store.ensure_session(&id()).await.unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
    assert!(store.health_check().await.is_err());
    let error = store.migrate().await.unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_is_unavailable() {
    let url = format!("redis://127.0.0.1:{}", closed_port());
    let redis = RedisCoordination::connect(&test_support::redis_options(&url)).unwrap();
    let error = redis
        .try_acquire(&id(), Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
    let error = redis
        .check("k", 1, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
    assert!(redis.health_check().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_postgres_gives_unavailable_and_service_resumes_when_it_returns() {
    let server = test_support::ThrowawayPostgres::start().unwrap();
    let url = test_support::create_database_on(&server.url()).await;
    let store = PostgresStore::connect(&test_support::postgres_options(&url)).unwrap();
    store.migrate().await.unwrap();
    store.ensure_session(&id()).await.unwrap();
    store.health_check().await.unwrap();

    server.stop().unwrap();
    let error = store.session(&id()).await.unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
    assert!(store.health_check().await.is_err());

    server.start_again().unwrap();
    let mut resumed = None;
    // Connections broken by the stop are dropped by the pool; the first calls may still meet one.
    for _ in 0..5 {
        match store.session(&id()).await {
            Ok(session) => {
                resumed = session;
                break;
            }
            Err(error) => assert!(error.is_unavailable(), "{error:?}"),
        }
    }
    assert!(
        resumed.is_some(),
        "the store works again without being rebuilt"
    );
}

/// Pooled Redis connections are reused without a PING while recently used, so a restart must be
/// noticed by the failing command itself: the broken connection is discarded, not returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_redis_gives_unavailable_and_service_resumes_when_it_returns() {
    let mut server = test_support::ThrowawayRedis::start().unwrap();
    let options = test_support::redis_options(&server.url());
    let pool_size = options.pool_size;
    let redis = RedisCoordination::connect(&options).unwrap();
    // Open several pooled connections.
    let checks: Vec<_> = (0..pool_size)
        .map(|_| redis.check("outage", 1000, Duration::from_secs(60)))
        .collect();
    for check in futures_util::future::join_all(checks).await {
        check.unwrap();
    }
    redis.health_check().await.unwrap();

    server.stop();
    let error = redis
        .check("outage", 1000, Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
    assert!(redis.health_check().await.is_err());

    server.restart().unwrap();
    let mut failures = 0;
    for _ in 0..20 {
        match redis.check("outage", 1000, Duration::from_secs(60)).await {
            Ok(_) => {}
            Err(error) => {
                assert!(error.is_unavailable(), "{error:?}");
                failures += 1;
            }
        }
    }
    assert!(
        failures <= pool_size,
        "each broken connection fails at most one command: {failures} failures"
    );
    let lease = redis
        .try_acquire(&id(), Duration::from_secs(5))
        .await
        .unwrap()
        .expect("the lock is free on the restarted server");
    assert!(redis.release(&lease).await.unwrap());
    redis.health_check().await.unwrap();
}

/// Found by `cargo xtask chaos`: a turn took its lock, Redis stopped (saving the lock in its
/// snapshot), the release failed; the restarted Redis kept the session busy for the whole TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_failed_while_redis_was_down_happens_when_it_returns() {
    let mut server = test_support::ThrowawayRedis::start_persistent().unwrap();
    let redis: Arc<dyn SessionLocks> =
        Arc::new(RedisCoordination::connect(&test_support::redis_options(&server.url())).unwrap());
    let ttl = Duration::from_secs(60);
    let guard = acquire_lock(&redis, &id(), ttl, Duration::ZERO)
        .await
        .unwrap();

    server.stop();
    let error = guard.release().await.unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
    server.restart().unwrap();
    assert!(
        redis.try_acquire(&id(), ttl).await.ok().flatten().is_none(),
        "the snapshot kept the lock, as a restarted Redis container does"
    );

    let freed = acquired_within(redis.as_ref(), ttl)
        .await
        .expect("the background retry released the lock long before its 60 s TTL");
    assert!(redis.release(&freed).await.unwrap());
}

/// Seen once by `cargo xtask chaos`: an acquire's script ran in Redis but its answer was lost, so
/// the caller, told "unavailable", never knew it held the lock, and the session stayed busy for
/// the lock's whole TTL. The caller now releases by owner in the background.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquire_whose_answer_was_lost_does_not_leave_the_lock_held() {
    let (proxy, url) = test_support::LossyProxy::in_front_of(&test_support::redis_url());
    let mut options = test_support::redis_options(&url);
    options.timeout = Duration::from_millis(300);
    let direct = RedisCoordination::connect(&RedisOptions {
        url: test_support::redis_options(&test_support::redis_url()).url,
        ..options.clone()
    })
    .unwrap();
    let redis = RedisCoordination::connect(&options).unwrap();
    let ttl = Duration::from_secs(60);
    let first = redis.try_acquire(&id(), ttl).await.unwrap().unwrap();
    assert!(redis.release(&first).await.unwrap());

    proxy.lose_replies(true);
    let error = redis.try_acquire(&id(), ttl).await.unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
    proxy.lose_replies(false);

    let freed = acquired_within(&direct, ttl)
        .await
        .expect("the lock the lost acquire took was released long before its 60 s TTL");
    assert_eq!(
        freed.fencing_token,
        first.fencing_token + 2,
        "the lost acquire's script did run (it took the token in between)"
    );
    assert!(direct.release(&freed).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_terminated_by_the_server_are_replaced() {
    let url = test_support::fresh_database_url().await;
    let store = PostgresStore::connect(&test_support::postgres_options(&url)).unwrap();
    store.migrate().await.unwrap();
    store.ensure_session(&id()).await.unwrap();
    let database = url.rsplit('/').next().unwrap().to_owned();
    let mut admin = AsyncPgConnection::establish(&test_support::database_url())
        .await
        .unwrap();
    admin
        .batch_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"
        ))
        .await
        .unwrap();
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        outcomes.push(store.session(&id()).await.map(|session| session.is_some()));
    }
    for outcome in &outcomes {
        if let Err(error) = outcome {
            assert!(
                error.is_unavailable(),
                "a dropped connection is Unavailable: {error:?}"
            );
        }
    }
    assert!(matches!(outcomes.last(), Some(Ok(true))), "{outcomes:?}");
}

/// An acquire that never reached Redis leaves nothing behind: a storm of them during an outage
/// must not leave a background release per request, each retrying for the lock's whole TTL (how
/// a Redis outage under load once held memory without bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquires_that_never_reached_redis_leave_no_background_work() {
    let redis = RedisCoordination::connect(&RedisOptions {
        timeout: Duration::from_millis(300),
        ..test_support::redis_options(&format!("redis://127.0.0.1:{}", closed_port()))
    })
    .unwrap();
    for _ in 0..300 {
        let error = redis
            .try_acquire(&id(), Duration::from_secs(120))
            .await
            .unwrap_err();
        assert!(error.is_unavailable(), "{error:?}");
    }
    let work = redis.background();
    assert_eq!(
        (work.started(), work.pending(), work.dropped()),
        (0, 0, 0),
        "300 failed acquires left background work behind"
    );
}

/// Releases that cannot run (guards dropped while Redis is down) wait in the background within
/// a fixed number of slots; the rest are dropped and counted, and their TTL frees the locks. The
/// ones that waited release their locks when Redis returns, and give their slots back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_waiting_for_redis_are_bounded_and_the_rest_dropped() {
    let mut server = test_support::ThrowawayRedis::start_persistent().unwrap();
    let work = Arc::new(BackgroundWork::new(4));
    let redis: Arc<dyn SessionLocks> = Arc::new(
        RedisCoordination::connect(&test_support::redis_options(&server.url()))
            .unwrap()
            .with_background(Arc::clone(&work)),
    );
    let ttl = Duration::from_secs(60);
    let sessions: Vec<SessionId> = (0..10)
        .map(|n| SessionId::parse(&format!("bounded-{n}")).unwrap())
        .collect();
    let mut guards = Vec::new();
    for session in &sessions {
        guards.push(
            acquire_lock(&redis, session, ttl, Duration::ZERO)
                .await
                .unwrap(),
        );
    }

    server.stop();
    drop(guards);
    assert_eq!((work.pending(), work.started(), work.dropped()), (4, 4, 6));
    server.restart().unwrap();

    let freed = tokio::time::timeout(Duration::from_secs(10), async {
        while work.pending() > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        freed.is_ok(),
        "the waiting releases finished once Redis returned"
    );
    let mut still_held = 0;
    for session in &sessions {
        match redis.try_acquire(session, ttl).await.unwrap() {
            Some(lease) => assert!(redis.release(&lease).await.unwrap()),
            None => still_held += 1,
        }
    }
    assert_eq!(
        still_held, 6,
        "the four queued releases ran; the six dropped locks wait for their TTL"
    );
}
