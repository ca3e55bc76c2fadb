//! PostgreSQL access for cardsync: the connection pool, embedded migrations, and one module per
//! table family with the typed queries the services share.

pub mod audit;
pub mod cards;
pub mod connections;
pub mod directory;
pub mod outbox;
pub mod subscriptions;
pub mod teams;
pub mod tenants;

use cardsync_config::PostgresSettings;
use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::str::FromStr;

/// Migrations compiled into every binary that links the store.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// What failed while talking to PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The connection URL does not parse (the URL itself is never printed: it may hold a password).
    #[error("postgres.url is not a valid PostgreSQL URL")]
    InvalidUrl(#[source] sqlx::Error),
    /// The database could not be reached or a statement failed.
    #[error("database query failed")]
    Query(#[from] sqlx::Error),
    /// A migration failed to apply.
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// The JSON text of a document stored in a `json` column. Cards' fields, audit states and outbox
/// headers are `json`, not `jsonb`: PostgreSQL never looks inside them, and `json` keeps the text
/// as sent instead of parsing it into `jsonb` on every write and printing it back on every read
/// (migration 0026). Statements bind the text and cast it with `::json`.
pub(crate) fn json_text<T: serde::Serialize + ?Sized>(document: &T) -> Result<String, StoreError> {
    serde_json::to_string(document)
        .map_err(|error| StoreError::Query(sqlx::Error::Encode(error.into())))
}

/// Connection options from settings.
fn connect_options(settings: &PostgresSettings) -> Result<PgConnectOptions, StoreError> {
    PgConnectOptions::from_str(settings.url.expose_secret()).map_err(StoreError::InvalidUrl)
}

/// A pool that connects on first use, so a service can start (and report not-ready) while
/// PostgreSQL is down.
pub fn pool_lazy(settings: &PostgresSettings) -> Result<PgPool, StoreError> {
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.timeout)
        .connect_lazy_with(connect_options(settings)?))
}

/// A pool whose first connection is established now.
pub async fn pool(settings: &PostgresSettings) -> Result<PgPool, StoreError> {
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.timeout)
        .connect_with(connect_options(settings)?)
        .await?)
}

/// Applies every pending migration; safe to run concurrently (sqlx takes an advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Whether the database answers a trivial query.
pub async fn ping(pool: &PgPool) -> bool {
    sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(pool)
        .await
        .is_ok()
}
