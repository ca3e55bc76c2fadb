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

    /// For each `(tenant, message id)`, whether it was applied before as far as Redis knows;
    /// one round trip (a pipeline) for all of them.
    pub async fn seen_all(&self, messages: &[(Uuid, &str)]) -> Result<Vec<bool>, DedupError> {
        let Some(connection) = &self.connection else {
            return Ok(vec![false; messages.len()]);
        };
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let mut connection = connection.clone();
        let mut pipe = redis::pipe();
        for (tenant_id, message_id) in messages {
            pipe.cmd("EXISTS").arg(self.key(*tenant_id, message_id));
        }
        let call = pipe.query_async::<Vec<bool>>(&mut connection);
        tokio::time::timeout(TIMEOUT, call)
            .await
            .map_err(|_| DedupError::TimedOut)?
            .map_err(DedupError::from)
    }

    /// Records that the messages were applied (call only after their commit); one round trip.
    pub async fn remember_all(&self, messages: &[(Uuid, &str)]) -> Result<(), DedupError> {
        let Some(connection) = &self.connection else {
            return Ok(());
        };
        if messages.is_empty() {
            return Ok(());
        }
        let mut connection = connection.clone();
        let mut pipe = redis::pipe();
        for (tenant_id, message_id) in messages {
            pipe.cmd("SET")
                .arg(self.key(*tenant_id, message_id))
                .arg(1)
                .arg("EX")
                .arg(self.ttl_seconds)
                .ignore();
        }
        let call = pipe.query_async::<()>(&mut connection);
        tokio::time::timeout(TIMEOUT, call)
            .await
            .map_err(|_| DedupError::TimedOut)?
            .map_err(DedupError::from)
    }
}
