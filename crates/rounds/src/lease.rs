//! Redis state of delta rounds: the per-tenant lease (so one round per tenant runs at a time
//! across replicas) with its fencing token, and the delta links. Keys are hash-tagged by tenant
//! (`{tenant}`) so Redis Cluster keeps a tenant's keys in one slot.
//!
//! Redis is never the only copy of anything that matters: losing the lease keys lets another
//! replica start a round (PostgreSQL's fence rejects the stale writer), and losing a delta link
//! costs one full delta round.

use redis::AsyncCommands as _;
use redis::aio::ConnectionManager;
use std::time::Duration;
use uuid::Uuid;

/// A failed Redis call.
#[derive(Debug, thiserror::Error)]
#[error("redis call failed")]
pub struct RedisError(#[from] redis::RedisError);

/// Lease and delta-link storage.
#[derive(Clone)]
pub struct RedisState {
    redis: ConnectionManager,
    prefix: String,
}

impl std::fmt::Debug for RedisState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisState")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// A held lease: the fencing token orders holders over time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The tenant.
    pub tenant: Uuid,
    /// Strictly greater than every earlier holder's token.
    pub token: i64,
}

/// Which delta link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collection {
    /// `/users/delta`.
    Users,
    /// `/groups/delta`.
    Groups,
}

/// Next fencing token (never at or below the floor PostgreSQL knows), then the lease if free;
/// 0 when another holder has it. Both keys share the tenant's hash tag (one cluster slot).
const ACQUIRE: &str = "local token = redis.call('INCR', KEYS[1]) \
    local floor = tonumber(ARGV[1]) \
    if token <= floor then token = floor + 1 redis.call('SET', KEYS[1], token) end \
    if redis.call('SET', KEYS[2], token, 'NX', 'PX', ARGV[2]) then return token else return 0 end";
const RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";
/// Graph's delta tokens for directory objects last 7 days; an older link is useless.
const LINK_TTL_SECONDS: u64 = 7 * 24 * 3600;

impl RedisState {
    /// Keys start with `prefix` (a deployment or test namespace).
    pub fn new(redis: ConnectionManager, prefix: &str) -> Self {
        Self {
            redis,
            prefix: prefix.to_owned(),
        }
    }

    fn key(&self, tenant: Uuid, name: &str) -> String {
        format!("{}{{{tenant}}}:{name}", self.prefix)
    }

    /// Tries to take the tenant's lease for `ttl`; `None` while another holder has it.
    ///
    /// `floor` is the highest token PostgreSQL has accepted (its fence). The counter lives in
    /// Redis, so a flushed or replaced Redis would start it again from 1 and every write would be
    /// refused as stale until it caught up; the counter is raised past `floor` instead, so a lost
    /// Redis costs one full round and nothing more.
    pub async fn acquire(
        &self,
        tenant: Uuid,
        ttl: Duration,
        floor: i64,
    ) -> Result<Option<Lease>, RedisError> {
        let mut redis = self.redis.clone();
        let token: i64 = redis::Script::new(ACQUIRE)
            .key(self.key(tenant, "fence"))
            .key(self.key(tenant, "lease"))
            .arg(floor)
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
            .invoke_async(&mut redis)
            .await?;
        Ok((token > 0).then_some(Lease { tenant, token }))
    }

    /// Extends the lease; false when it was lost (expired and taken, or deleted).
    pub async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, RedisError> {
        let mut redis = self.redis.clone();
        let renewed: i64 = redis::Script::new(RENEW)
            .key(self.key(lease.tenant, "lease"))
            .arg(lease.token)
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
            .invoke_async(&mut redis)
            .await?;
        Ok(renewed == 1)
    }

    /// Gives the lease up if still held.
    pub async fn release(&self, lease: &Lease) -> Result<(), RedisError> {
        let mut redis = self.redis.clone();
        let _: i64 = redis::Script::new(RELEASE)
            .key(self.key(lease.tenant, "lease"))
            .arg(lease.token)
            .invoke_async(&mut redis)
            .await?;
        Ok(())
    }

    /// The stored delta link, if any.
    pub async fn delta_link(
        &self,
        tenant: Uuid,
        collection: Collection,
    ) -> Result<Option<String>, RedisError> {
        let mut redis = self.redis.clone();
        Ok(redis.get(self.key(tenant, link_name(collection))).await?)
    }

    /// Stores the delta link a completed round ended with.
    pub async fn set_delta_link(
        &self,
        tenant: Uuid,
        collection: Collection,
        link: &str,
    ) -> Result<(), RedisError> {
        let mut redis = self.redis.clone();
        let _: () = redis
            .set_ex(
                self.key(tenant, link_name(collection)),
                link,
                LINK_TTL_SECONDS,
            )
            .await?;
        Ok(())
    }

    /// Forgets the delta links (a forced full round).
    pub async fn forget_delta_links(&self, tenant: Uuid) -> Result<(), RedisError> {
        let mut redis = self.redis.clone();
        let _: () = redis
            .del(&[
                self.key(tenant, link_name(Collection::Users)),
                self.key(tenant, link_name(Collection::Groups)),
            ])
            .await?;
        Ok(())
    }
}

fn link_name(collection: Collection) -> &'static str {
    match collection {
        Collection::Users => "delta:users",
        Collection::Groups => "delta:groups",
    }
}
