//! Test helpers shared by the workspace's tests: a fresh migrated database per test, a random
//! Redis key prefix per test, throwaway Postgres and Redis servers for outage tests (from
//! `dev-harness`), and a proxy that loses replies. The fake model servers are `fake-openai`.
//!
//! Tests that need Postgres or Redis find them through `DATABASE_URL` and `REDIS_URL`, which
//! `cargo xtask test` sets (starting throwaway servers when none is given). They never skip.

// Helpers panic with a message on purpose: a failure here is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod proxy;

use std::time::Duration;

use agent_storage::{PostgresOptions, PostgresStore, RedisCoordination, RedisOptions};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use secrecy::SecretString;

pub use dev_harness::{
    McpServer, McpServerKind, TestTools, ThrowawayPostgres, ThrowawayRedis, sse, system_program,
};
pub use proxy::LossyProxy;

const HOW_TO_START: &str = "run the tests with `cargo xtask test`, which starts Postgres and \
    Redis (install them with `apt-get install postgresql redis-server`), or set DATABASE_URL and \
    REDIS_URL to running servers";

/// The server-level URL tests create their databases on.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| panic!("DATABASE_URL is not set: {HOW_TO_START}"))
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| panic!("REDIS_URL is not set: {HOW_TO_START}"))
}

/// Creates an empty database with a random name on the `DATABASE_URL` server; returns its URL.
pub async fn fresh_database_url() -> String {
    create_database_on(&database_url()).await
}

/// Creates an empty database with a random name on the server of `server_url`.
pub async fn create_database_on(server_url: &str) -> String {
    let name = format!("agent_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = AsyncPgConnection::establish(server_url)
        .await
        .unwrap_or_else(|error| panic!("cannot connect to {server_url}: {error}; {HOW_TO_START}"));
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("CREATE DATABASE");
    let mut url = url::Url::parse(server_url).expect("DATABASE_URL is a URL");
    url.set_path(&name);
    url.to_string()
}

/// How many connections are open to the database of `database_url` (as Postgres counts them).
pub async fn open_connections(database_url: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        count: i64,
    }
    let name = url::Url::parse(database_url)
        .expect("a database URL")
        .path()
        .trim_start_matches('/')
        .to_owned();
    let mut admin = AsyncPgConnection::establish(&database_url_of_server(database_url))
        .await
        .expect("connect to the server");
    let query =
        diesel::sql_query("SELECT count(*) AS count FROM pg_stat_activity WHERE datname = $1")
            .bind::<diesel::sql_types::Text, _>(name);
    let count: Count = diesel_async::RunQueryDsl::get_result(query, &mut admin)
        .await
        .expect("count connections");
    count.count
}

/// The URL of the `postgres` database on the same server.
fn database_url_of_server(database_url: &str) -> String {
    let mut url = url::Url::parse(database_url).expect("a database URL");
    url.set_path("postgres");
    url.to_string()
}

pub fn postgres_options(url: &str) -> PostgresOptions {
    PostgresOptions {
        url: SecretString::from(url.to_owned()),
        pool_size: 8,
        connect_timeout: Duration::from_secs(3),
        statement_timeout: Duration::from_secs(5),
    }
}

/// A store on a fresh, migrated database of its own.
pub async fn postgres_store() -> PostgresStore {
    let store = PostgresStore::connect(&postgres_options(&fresh_database_url().await)).unwrap();
    store.migrate().await.expect("migrations run");
    store
}

pub fn redis_options(url: &str) -> RedisOptions {
    RedisOptions {
        url: SecretString::from(url.to_owned()),
        pool_size: 8,
        timeout: Duration::from_secs(2),
        key_prefix: format!("test:{}:", uuid::Uuid::new_v4().simple()),
    }
}

/// Redis locks and limits under a random key prefix of their own.
pub fn redis_coordination() -> RedisCoordination {
    RedisCoordination::connect(&redis_options(&redis_url())).unwrap()
}
