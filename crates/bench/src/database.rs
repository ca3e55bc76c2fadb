//! A database made for one benchmark run, migrated, and dropped after it.

use anyhow::Context as _;

const ADMIN_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The URL of the run's database `name`: through PostgreSQL's local socket, as a co-located
/// database would be reached. (Over loopback TCP, sqlx negotiates TLS with Debian's default
/// server, which made the card-writer measure ~45% slower on this machine.)
pub fn database_url(name: &str) -> String {
    format!("postgres://postgres@localhost/{name}?host=/var/run/postgresql")
}

/// Creates the database `name` (hex digits and underscores only: it is spliced into the
/// statement) and returns a pool of `connections` on it, migrated.
pub async fn create_database(name: &str, connections: u32) -> anyhow::Result<sqlx::PgPool> {
    let admin = sqlx::PgPool::connect(ADMIN_DATABASE_URL)
        .await
        .context("PostgreSQL must run on 127.0.0.1:5432: run `make services`")?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .with_context(|| format!("creating {name}"))?;
    admin.close().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(connections)
        .connect(&database_url(name))
        .await
        .with_context(|| format!("connecting to {name}"))?;
    cardsync_store::migrate(&pool)
        .await
        .with_context(|| format!("migrating {name}"))?;
    Ok(pool)
}

/// Drops the run's database (and whatever is still connected to it).
pub async fn drop_database(name: &str) -> anyhow::Result<()> {
    let admin = sqlx::PgPool::connect(ADMIN_DATABASE_URL).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&admin)
    .await?;
    admin.close().await;
    Ok(())
}
