//! How rounds behave: the lease's lifetime and wait, the photo budget and the publish batch.
//! Read from the `[worker]` section of a service's settings (the keys the delta-worker has
//! always used), so every service that runs rounds is tuned the same way.

use cardsync_config::Validate;
use serde::Deserialize;
use std::time::Duration;

/// The shortest lease lifetime accepted: renewals come every fifth of it, and much below a
/// second between renewals a slow Redis answer alone would lose the lease.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(3);

/// Round behaviour (`[worker]`).
#[derive(Debug, Clone, Deserialize)]
pub struct RoundSettings {
    /// Lease lifetime: how long a crashed holder blocks its tenant at most. Renewed every fifth
    /// of it while a round runs (see `keeper.rs` for why a short one is safe).
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub lease_ttl: Duration,
    /// Longest wait for another replica's round of the same tenant.
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub lease_wait: Duration,
    /// Photo metadata checks per round beyond newly created users (Graph budget).
    pub photo_checks_per_round: u32,
    /// Card commands per publish batch.
    pub emit_batch: u32,
}

impl Validate for RoundSettings {
    fn validate(&self, problems: &mut Vec<String>) {
        if self.lease_ttl < MIN_LEASE_TTL {
            problems.push(format!(
                "worker.lease_ttl: must be at least {}s",
                MIN_LEASE_TTL.as_secs()
            ));
        }
        if self.emit_batch == 0 {
            problems.push("worker.emit_batch: must be greater than 0".into());
        }
    }
}
