//! PostgreSQL access for cardsync: the connection pool, embedded migrations, and one module per
//! table family with the typed queries the services share.

pub mod admin;
pub mod audit;
pub mod cards;
pub mod checks;
pub mod connections;
pub mod directory;
pub mod offboarding;
pub mod outbox;
pub mod photos;
pub mod runs;
pub mod safety;
pub mod schedules;
pub mod sealing;
pub mod subscription_slots;
pub mod subscriptions;
pub mod teams;
pub mod tenants;

use cardsync_config::PostgresSettings;
use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::str::FromStr;

/// Migrations compiled into every binary that links the store. Migrations that a newer release
/// applied are not an error: they are additive for one release, so `migrate` of the release
/// before (a `helm rollback` runs it as its hook) finds nothing to do instead of failing. A
/// migration whose text changed after it was applied still is an error (its checksum).
pub static MIGRATOR: sqlx::migrate::Migrator = {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.ignore_missing = true;
    migrator
};

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

impl StoreError {
    /// Whether trying again later can help. Unavailable, timed out, deadlocked or a lost race
    /// on a unique index: yes. Undecodable stored data, a violated check or a bad URL: a bug
    /// or a corrupt row, retrying cannot help.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::InvalidUrl(_) => false,
            StoreError::Query(error) => is_transient_sql(error),
            StoreError::Migrate(_) => true,
        }
    }
}

/// [`StoreError::is_transient`] for a bare `sqlx::Error`.
pub fn is_transient_sql(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::Encode(_)
        | sqlx::Error::Configuration(_) => false,
        sqlx::Error::Database(db) => {
            db.is_unique_violation() || !db.code().is_some_and(|code| code.starts_with("23"))
        }
        _ => true,
    }
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

/// How the database's schema compares with the migrations this binary embeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SchemaVersion {
    /// The newest migration applied to the database (`None`: never migrated).
    pub database: Option<i64>,
    /// The newest migration this binary embeds.
    pub required: i64,
    /// Whether every embedded migration is applied. A database migrated further by a newer
    /// release is current too: migrations stay additive for one release, so a rolling upgrade
    /// keeps serving.
    pub current: bool,
}

/// Reads which migrations the database has. Never migrates: that is the `migrate` command's
/// job (the Helm chart's hook Job), so that no serving replica ever changes the schema.
pub async fn schema_version(pool: &PgPool) -> Result<SchemaVersion, StoreError> {
    let required = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('public._sqlx_migrations') IS NOT NULL")
            .fetch_one(pool)
            .await?;
    let applied: Vec<i64> = if exists {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await?
    } else {
        Vec::new()
    };
    let current = MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .all(|m| applied.binary_search(&m.version).is_ok());
    Ok(SchemaVersion {
        database: applied.last().copied(),
        required,
        current,
    })
}

/// Whether the database answers a trivial query.
pub async fn ping(pool: &PgPool) -> bool {
    sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(pool)
        .await
        .is_ok()
}
