//! The migration policy, the same in every service: services never migrate. The `migrate`
//! command (every service binary has it; the Helm chart runs it as a hook Job before install
//! and upgrade) applies migrations; a service whose database lacks a migration it embeds is
//! not ready (`/health/ready` shows both versions) and starts no consumer until the schema is
//! current. Migrations stay additive for one release, so during a rolling upgrade the old
//! replicas keep serving against the migrated schema.

use cardsync_store::{SchemaVersion, StoreError};
use sqlx::PgPool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often a service waiting for its schema looks again.
const RECHECK: Duration = Duration::from_secs(2);

/// Answers whether the database's schema is what this binary needs. Once it was current it
/// stays current (schemas only move forward), so later looks cost no query.
#[derive(Debug, Clone)]
pub struct SchemaGate {
    pool: PgPool,
    current: Arc<OnceLock<SchemaVersion>>,
}

impl SchemaGate {
    /// A gate on `pool`'s database.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            current: Arc::new(OnceLock::new()),
        }
    }

    /// The database's schema against this binary's migrations.
    pub async fn version(&self) -> Result<SchemaVersion, StoreError> {
        if let Some(version) = self.current.get() {
            return Ok(*version);
        }
        let version = cardsync_store::schema_version(&self.pool).await?;
        if version.current {
            let _ = self.current.set(version);
        }
        Ok(version)
    }

    /// Waits until the schema is current (`true`) or `shutdown` is cancelled (`false`). Logs
    /// once why it waits, so an operator who forgot the migration Job sees it at once.
    pub async fn wait_until_current(&self, shutdown: &CancellationToken) -> bool {
        let mut told = false;
        loop {
            match self.version().await {
                Ok(version) if version.current => {
                    if told {
                        tracing::info!(
                            database = version.database,
                            "database schema is current; starting"
                        );
                    }
                    return true;
                }
                Ok(version) if !told => {
                    told = true;
                    tracing::warn!(
                        database = version.database,
                        required = version.required,
                        "database schema is older than this release needs; waiting for `migrate`"
                    );
                }
                Ok(_) => {}
                Err(error) => tracing::debug!(
                    error = %cardsync_telemetry::error_chain(&error),
                    "database schema cannot be read yet"
                ),
            }
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(RECHECK) => {}
            }
        }
    }
}
