//! What every cardsync test suite sets up the same way, in one dev-only crate: the servers'
//! URLs (the local defaults, or `CARDSYNC_TEST_DATABASE_URL`, `CARDSYNC_TEST_AMQP_URL` and
//! `CARDSYNC_TEST_REDIS_URL`), the test database migrated once per test binary, fresh empty
//! databases for tests that need one of their own, unique names for queues and keys, losing a
//! deployment's Redis keys on purpose, and Graph-shaped notifications ([`notifications`]).
//!
//! A test that cannot reach a server fails with a message naming `make services`; it never
//! skips silently.

pub mod notifications;

use sqlx::PgPool;
use tokio::sync::OnceCell;
use uuid::Uuid;

/// The test database: `CARDSYNC_TEST_DATABASE_URL`, else `cardsync_test` on the local server.
pub fn database_url() -> String {
    std::env::var("CARDSYNC_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/cardsync_test".to_owned())
}

/// The test broker: `CARDSYNC_TEST_AMQP_URL`, else the local RabbitMQ as guest.
pub fn amqp_url() -> String {
    std::env::var("CARDSYNC_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// The test Redis: `CARDSYNC_TEST_REDIS_URL`, else the local one, database 0.
pub fn redis_url() -> String {
    std::env::var("CARDSYNC_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned())
}

/// Installs the rustls provider and the test subscriber; every test calls it first (both are
/// once per process).
pub fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    cardsync_telemetry::init_for_tests();
}

static MIGRATED: OnceCell<()> = OnceCell::const_new();

/// A pool on the test database, migrated once per test binary. Each test gets its own pool:
/// every `#[tokio::test]` has its own runtime, and a pool must not outlive its runtime.
pub async fn test_pool() -> PgPool {
    init();
    let pool = PgPool::connect(&database_url())
        .await
        .expect("PostgreSQL must run with the test database (cardsync_test): run `make services`");
    MIGRATED
        .get_or_init(|| async {
            cardsync_store::migrate(&pool)
                .await
                .expect("the migrations apply to the test database");
        })
        .await;
    pool
}

/// `{label}{12 hex}.`: a prefix for the queues, exchanges and keys of one test.
pub fn unique_prefix(label: &str) -> String {
    format!("{label}{}.", &Uuid::new_v4().simple().to_string()[..12])
}

/// Deletes every Redis key under `prefix` (what losing Redis looks like to one deployment) and
/// returns how many there were.
pub async fn forget_redis_keys(prefix: &str) -> usize {
    let client = redis::Client::open(redis_url()).expect("a valid test Redis URL");
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis must run (CARDSYNC_TEST_REDIS_URL or 127.0.0.1:6379): run `make services`");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut redis)
        .await
        .expect("KEYS answers");
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut redis)
            .await
            .expect("DEL answers");
    }
    keys.len()
}

/// An empty database of its own on the test server (its name is generated here, never taken
/// from input, so the SQL that creates and drops it is safe to format), for a test that must see a schema other
/// than the shared test database's. Call [`FreshDatabase::drop_database`] at the end.
#[derive(Debug)]
pub struct FreshDatabase {
    /// Its URL.
    pub url: String,
    name: String,
}

impl FreshDatabase {
    /// Creates `cardsync_t_<random>` on the test server.
    pub async fn create() -> Self {
        init();
        let name = format!("cardsync_t_{}", &Uuid::new_v4().simple().to_string()[..16]);
        let admin = admin_pool().await;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("the test server lets the test user create a database");
        admin.close().await;
        let url = with_database(&database_url(), &name);
        Self { url, name }
    }

    /// A pool on it.
    pub async fn pool(&self) -> PgPool {
        PgPool::connect(&self.url)
            .await
            .expect("the fresh database accepts connections")
    }

    /// Drops it, ending any connection still open to it.
    pub async fn drop_database(self) {
        let admin = admin_pool().await;
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&admin)
        .await;
        admin.close().await;
    }
}

async fn admin_pool() -> PgPool {
    PgPool::connect(&with_database(&database_url(), "postgres"))
        .await
        .expect("PostgreSQL must run with a `postgres` database: run `make services`")
}

/// `url` with its database path replaced by `name`, query string kept.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_end = base
        .find("://")
        .map(|scheme| scheme + 3)
        .and_then(|start| base[start..].find('/').map(|slash| start + slash))
        .unwrap_or(base.len());
    let mut out = format!("{}/{name}", &base[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_url_is_replaced_and_its_query_kept() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/cardsync_test", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@db/a?sslmode=disable", "y"),
            "postgres://u:p@db/y?sslmode=disable"
        );
        assert_eq!(with_database("postgres://db", "z"), "postgres://db/z");
    }
}
