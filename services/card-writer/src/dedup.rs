//! The Redis dedup fast path: a key per applied command message, written after the commit, so a
//! redelivered command is acknowledged without touching PostgreSQL. Never the guard (invariant
//! 4): a lost or flushed Redis only means the version check in PostgreSQL does the work, and
//! every Redis failure is ignored (counted).

use cardsync_config::RedisSettings;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::ExposeSecret as _;
use std::fmt;
use std::time::Duration;
use uuid::Uuid;

/// Redis calls give up after this long: a slow Redis must not slow the writer down.
const TIMEOUT: Duration = Duration::from_millis(250);

/// The fast path; cheap to clone.
#[derive(Clone)]
pub struct Dedup {
    connection: Option<ConnectionManager>,
    prefix: String,
    ttl_seconds: u64,
}

impl fmt::Debug for Dedup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dedup")
            .field("prefix", &self.prefix)
            .field("enabled", &self.connection.is_some())
            .finish()
    }
}

/// Why Redis could not answer.
#[derive(Debug, thiserror::Error)]
pub enum DedupError {
    /// Redis failed or answered too late.
    #[error("redis dedup call failed")]
    Redis(#[from] redis::RedisError),
    /// Redis answered too late.
    #[error("redis dedup call timed out")]
    TimedOut,
}

impl Dedup {
    /// A fast path that connects on first use (the service starts while Redis is down). An
    /// unusable URL disables it, logged once.
    pub fn new(settings: &RedisSettings, ttl: Duration) -> Self {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let connection = redis::Client::open(settings.url.expose_secret())
            .and_then(|client| ConnectionManager::new_lazy_with_config(client, config));
        let connection = match connection {
            Ok(connection) => Some(connection),
            Err(error) => {
                tracing::warn!(error = %error, "redis dedup disabled: unusable redis settings");
                None
            }
        };
        Self {
            connection,
            prefix: settings.key_prefix.clone(),
            ttl_seconds: ttl.as_secs().max(1),
        }
    }

    /// The key of one command message; the tenant is a hash tag, so Redis Cluster keeps a
    /// tenant's keys on one slot.
    pub fn key(&self, tenant_id: Uuid, message_id: &str) -> String {
        format!("{}:{{{tenant_id}}}:cmd:{message_id}", self.prefix)
    }

    /// Whether the message was applied before, as far as Redis knows.
    pub async fn seen(&self, tenant_id: Uuid, message_id: &str) -> Result<bool, DedupError> {
        let Some(connection) = &self.connection else {
            return Ok(false);
        };
        let mut connection = connection.clone();
        let key = self.key(tenant_id, message_id);
        let mut command = redis::cmd("EXISTS");
        command.arg(&key);
        let call = command.query_async::<bool>(&mut connection);
        tokio::time::timeout(TIMEOUT, call)
            .await
            .map_err(|_| DedupError::TimedOut)?
            .map_err(DedupError::from)
    }

    /// Records that the message was applied (call only after the commit).
    pub async fn remember(&self, tenant_id: Uuid, message_id: &str) -> Result<(), DedupError> {
        let Some(connection) = &self.connection else {
            return Ok(());
        };
        let mut connection = connection.clone();
        let key = self.key(tenant_id, message_id);
        let mut command = redis::cmd("SET");
        command.arg(&key).arg(1).arg("EX").arg(self.ttl_seconds);
        let call = command.query_async::<()>(&mut connection);
        tokio::time::timeout(TIMEOUT, call)
            .await
            .map_err(|_| DedupError::TimedOut)?
            .map_err(DedupError::from)
    }
}
