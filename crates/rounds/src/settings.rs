//! How rounds behave: the lease's lifetime and wait, the photo and role checks' cadence and
//! budget, and the publish batch.
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
    /// How often each tenant gets its budgeted photo check (a round of any cause runs it when
    /// due; the delta-worker's safety poll starts a round for a tenant that has none). `0s`:
    /// every round.
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub photo_check_interval: Duration,
    /// Graph requests one photo check may spend: a metadata read per user, a download per
    /// changed photo (two when the upload is smaller than the size asked for). A round's new
    /// users are checked within the same budget; those beyond it come first next time.
    pub photo_check_budget: u32,
    /// A photo checked more recently than this is not checked again (`0s`: any photo), so a
    /// tenant's steady cost is its users once per this, and a first import goes first.
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub photo_recheck_after: Duration,
    /// How often each tenant with admin roles on gets its admin-role check (two requests). `0s`:
    /// every round.
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub roles_check_interval: Duration,
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
        if self.photo_check_budget == 0 {
            problems.push("worker.photo_check_budget: must be greater than 0".into());
        }
        if self.emit_batch == 0 {
            problems.push("worker.emit_batch: must be greater than 0".into());
        }
    }
}
