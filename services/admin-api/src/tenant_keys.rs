//! A tenant's Redis keys, for offboarding. Every service puts the tenant's id in its keys as a
//! hash tag, `{<tenant id>}`, under a prefix starting with the deployment's `redis.key_prefix`
//! (delta links, round leases and fences of the delta-worker, the card-writer's dedup marks), so
//! one `SCAN MATCH <prefix>*{<tenant>}*` finds them all without knowing each key's shape.

use cardsync_config::RedisSettings;
use redis::aio::ConnectionManager;
use secrecy::ExposeSecret as _;
use uuid::Uuid;

/// Finds and deletes a tenant's keys.
#[derive(Clone)]
pub struct TenantKeys {
    redis: ConnectionManager,
    prefix: String,
}

impl std::fmt::Debug for TenantKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantKeys")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Keys asked for per `SCAN` step.
const SCAN_COUNT: usize = 1000;

impl TenantKeys {
    /// A client that connects on first use.
    pub fn lazy(settings: &RedisSettings) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(settings.url.expose_secret())?;
        let redis = ConnectionManager::new_lazy_with_config(
            client,
            redis::aio::ConnectionManagerConfig::new(),
        )?;
        Ok(Self {
            redis,
            prefix: settings.key_prefix.clone(),
        })
    }

    /// Deletes every key of `tenant`; returns how many there were.
    pub async fn delete_all(&self, tenant: Uuid) -> Result<u64, redis::RedisError> {
        let mut redis = self.redis.clone();
        let pattern = pattern(&self.prefix, tenant);
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut redis)
                .await?;
            if !keys.is_empty() {
                // One key per call: a cluster keeps a tenant's keys in one slot only when every
                // service tags them alike, which this must not assume.
                for key in keys {
                    let removed: u64 = redis::cmd("DEL").arg(&key).query_async(&mut redis).await?;
                    deleted += removed;
                }
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }
}

/// The `SCAN` pattern of `tenant`'s keys: the prefix with glob characters escaped.
fn pattern(prefix: &str, tenant: Uuid) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 48);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push_str(&format!("*{{{tenant}}}*"));
    pattern
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_escapes_the_prefix_and_matches_the_hash_tag() {
        let tenant = Uuid::nil();
        assert_eq!(pattern("t*x:", tenant), format!("t\\*x:*{{{tenant}}}*"));
        assert_eq!(
            pattern("cardsync", tenant),
            format!("cardsync*{{{tenant}}}*")
        );
    }
}
