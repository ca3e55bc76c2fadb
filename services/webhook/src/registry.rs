//! The webhook's view of the subscription registry: an in-memory cache over PostgreSQL.
//!
//! - Known subscriptions are served from memory and refreshed wholesale in the background, so
//!   the webhook keeps accepting them while PostgreSQL is briefly down.
//! - A miss asks PostgreSQL, in one round trip and within a per-second budget, for that id and for
//!   a pending registration of the notification's tenant with the same clientState (a create in
//!   flight: Graph may deliver before its 201 reached the subscription manager, so before the
//!   `subscriptions` row exists). Pending registrations are kept in memory by clientState hash and
//!   checked before the negative cache, so a notification of a brand-new subscription is accepted
//!   however its id was seen before.
//! - The answer "no such subscription" is remembered for a while (negative cache) per id and
//!   clientState, so random ids cannot hammer the database: a forged notification costs at most
//!   one budgeted look-up, as before pending registrations existed. Guessing a pending
//!   registration needs its clientState, a 256-bit secret.
//! - When a miss cannot be checked (budget spent, database down) the answer is
//!   [`Lookup::Unverifiable`]: the request gets `503` and Graph redelivers it later, so a real
//!   notification for a brand-new subscription is delayed, never lost.

use cardsync_store::subscriptions::{self, ClientStateHash, PendingRegistration, Subscription};
use cardsync_telemetry::error_chain;
use serde::Deserialize;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Cache tuning.
#[derive(Debug, Clone, Deserialize)]
pub struct RegistrySettings {
    /// How often the whole registry is reloaded from PostgreSQL.
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub refresh_interval: Duration,
    /// How long "no such subscription" is remembered.
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub negative_ttl: Duration,
    /// At most this many database look-ups of unknown ids per second.
    pub miss_budget_per_second: u32,
    /// At most this many remembered unknown ids (the oldest half is forgotten when full).
    pub negative_capacity: usize,
}

impl cardsync_config::Validate for RegistrySettings {
    fn validate(&self, problems: &mut Vec<String>) {
        if self.refresh_interval.is_zero() {
            problems.push("registry.refresh_interval: must be greater than 0".into());
        }
        if self.miss_budget_per_second == 0 {
            problems.push("registry.miss_budget_per_second: must be greater than 0".into());
        }
        if self.negative_capacity == 0 {
            problems.push("registry.negative_capacity: must be greater than 0".into());
        }
    }
}

/// The outcome of looking a subscription id up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A registered subscription.
    Found(Subscription),
    /// Not registered yet, but a live pending registration of the notification's tenant has its
    /// clientState: the subscription as that registration describes it.
    Pending(Subscription),
    /// Definitely not ours (as of a recent check).
    Unknown,
    /// Could not be checked right now.
    Unverifiable,
}

/// The cached registry. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Registry {
    pool: PgPool,
    settings: RegistrySettings,
    /// Known subscriptions, with when each was read from the database.
    known: RwLock<HashMap<Uuid, (Subscription, Instant)>>,
    /// Pending registrations by clientState hash, with when each was read.
    pending: RwLock<HashMap<ClientStateHash, (PendingRegistration, Instant)>>,
    /// Recently unknown (id, clientState) pairs.
    unknown: Mutex<HashMap<(Uuid, ClientStateHash), Instant>>,
    budget: Mutex<Budget>,
    /// When each subscription last had a notification accepted, not yet written.
    deliveries: Mutex<HashMap<Uuid, OffsetDateTime>>,
}

#[derive(Debug)]
struct Budget {
    tokens: f64,
    refilled_at: Instant,
}

impl Registry {
    /// An empty cache over `pool`; call [`Registry::reload`] or spawn the refresher to warm it.
    pub fn new(pool: PgPool, settings: RegistrySettings) -> Self {
        let budget = Budget {
            tokens: f64::from(settings.miss_budget_per_second),
            refilled_at: Instant::now(),
        };
        Self {
            pool,
            settings,
            known: RwLock::new(HashMap::new()),
            pending: RwLock::new(HashMap::new()),
            unknown: Mutex::new(HashMap::new()),
            budget: Mutex::new(budget),
            deliveries: Mutex::new(HashMap::new()),
        }
    }

    /// Remembers that notifications of `subscriptions` were accepted at `at` (one lock per
    /// request); written to the registry (`last_notification_at`, what operators see) by the next
    /// [`Registry::flush_deliveries`].
    pub fn note_deliveries(&self, subscriptions: &[Uuid], at: OffsetDateTime) {
        let mut deliveries = lock(&self.deliveries);
        for subscription in subscriptions {
            let last = deliveries.entry(*subscription).or_insert(at);
            *last = (*last).max(at);
        }
    }

    /// Writes the deliveries noted since the last flush in one statement; on failure they are
    /// kept for the next one (a later time wins).
    pub async fn flush_deliveries(&self) -> Result<u64, cardsync_store::StoreError> {
        let noted: Vec<(Uuid, OffsetDateTime)> = lock(&self.deliveries).drain().collect();
        match subscriptions::note_deliveries(&self.pool, &noted).await {
            Ok(written) => Ok(written),
            Err(error) => {
                for (id, at) in noted {
                    self.note_deliveries(&[id], at);
                }
                Err(error)
            }
        }
    }

    /// Looks up the subscription `id` of a notification from `tenant` presenting the clientState
    /// hashed as `presented`, from memory when possible.
    pub async fn lookup(&self, id: Uuid, tenant: Uuid, presented: &ClientStateHash) -> Lookup {
        if let Some((found, _)) = read(&self.known).get(&id) {
            return Lookup::Found(found.clone());
        }
        if let Some(pending) = self.pending_match(id, tenant, presented) {
            return Lookup::Pending(pending);
        }
        if self.recently_unknown(id, presented) {
            return Lookup::Unknown;
        }
        if !self.take_budget() {
            return Lookup::Unverifiable;
        }
        match subscriptions::verify(&self.pool, id, tenant, presented).await {
            Ok(verification) => {
                if let Some(found) = verification.registered {
                    write(&self.known).insert(id, (found.clone(), Instant::now()));
                    return Lookup::Found(found);
                }
                if let Some(pending) = verification.pending {
                    write(&self.pending).insert(pending.client_state, (pending, Instant::now()));
                    if let Some(pending) = self.pending_match(id, tenant, presented) {
                        return Lookup::Pending(pending);
                    }
                }
                self.remember_unknown(id, presented);
                Lookup::Unknown
            }
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "registry lookup failed");
                Lookup::Unverifiable
            }
        }
    }

    /// The subscription a live pending registration vouches for: same tenant, same clientState.
    fn pending_match(
        &self,
        id: Uuid,
        tenant: Uuid,
        presented: &ClientStateHash,
    ) -> Option<Subscription> {
        let pending = read(&self.pending);
        let (registration, _) = pending.get(presented)?;
        let live = registration.tenant_id == tenant
            && registration.until > OffsetDateTime::now_utc()
            && registration.client_state.matches(presented);
        live.then(|| Subscription {
            id,
            tenant_id: registration.tenant_id,
            resource: registration.resource.clone(),
            client_state: registration.client_state,
            expires_at: registration.until,
        })
    }

    /// Replaces the cache with the registry's current content; on failure the cache is kept.
    /// Entries a look-up added while the reload's queries ran are newer than its snapshot and are
    /// kept, so a reload racing a miss never forgets a subscription it just learnt.
    pub async fn reload(&self) -> Result<usize, cardsync_store::StoreError> {
        let started = Instant::now();
        let all = subscriptions::all(&self.pool).await?;
        let pending = subscriptions::pending(&self.pool).await?;
        let count = all.len();
        let loaded_at = Instant::now();
        let mut fresh: HashMap<Uuid, (Subscription, Instant)> =
            all.into_iter().map(|s| (s.id, (s, loaded_at))).collect();
        let mut fresh_pending: HashMap<ClientStateHash, (PendingRegistration, Instant)> = pending
            .into_iter()
            .map(|p| (p.client_state, (p, loaded_at)))
            .collect();
        // Ids registered, or clientStates pending, since they were last seen as unknown become
        // valid at once.
        lock(&self.unknown)
            .retain(|(id, hash), _| !fresh.contains_key(id) && !fresh_pending.contains_key(hash));
        {
            let mut known = write(&self.known);
            for (id, (subscription, fetched_at)) in known.drain() {
                if fetched_at >= started {
                    fresh.entry(id).or_insert((subscription, fetched_at));
                }
            }
            *known = fresh;
        }
        let mut current = write(&self.pending);
        for (hash, (registration, fetched_at)) in current.drain() {
            if fetched_at >= started {
                fresh_pending
                    .entry(hash)
                    .or_insert((registration, fetched_at));
            }
        }
        *current = fresh_pending;
        Ok(count)
    }

    /// Whether PostgreSQL answers.
    pub async fn is_reachable(&self) -> bool {
        cardsync_store::ping(&self.pool).await
    }

    /// Reloads every `refresh_interval` until `shutdown`.
    pub fn spawn_refresher(
        self: Arc<Self>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            // The first reload happens at start-up (`run_until_stopped`); the next one a period later.
            let period = self.settings.refresh_interval;
            let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = ticker.tick() => {
                        if let Err(error) = self.flush_deliveries().await {
                            tracing::warn!(error = %error_chain(&error), "recording the last notification times failed; trying again next period");
                        }
                        match self.reload().await {
                            Ok(count) => tracing::debug!(count, "registry reloaded"),
                            Err(error) => tracing::warn!(error = %error_chain(&error), "registry reload failed; serving cached entries"),
                        }
                    }
                }
            }
            // What was accepted since the last period, before the process ends.
            if let Err(error) = self.flush_deliveries().await {
                tracing::warn!(error = %error_chain(&error), "recording the last notification times failed at shutdown");
            }
        })
    }

    fn recently_unknown(&self, id: Uuid, presented: &ClientStateHash) -> bool {
        lock(&self.unknown)
            .get(&(id, *presented))
            .is_some_and(|since| since.elapsed() < self.settings.negative_ttl)
    }

    fn remember_unknown(&self, id: Uuid, presented: &ClientStateHash) {
        let mut unknown = lock(&self.unknown);
        if unknown.len() >= self.settings.negative_capacity {
            let ttl = self.settings.negative_ttl;
            unknown.retain(|_, since| since.elapsed() < ttl);
            if unknown.len() >= self.settings.negative_capacity {
                // Still full of fresh entries: forgetting costs only extra (budgeted) look-ups.
                unknown.clear();
            }
        }
        unknown.insert((id, *presented), Instant::now());
    }

    fn take_budget(&self) -> bool {
        let mut budget = lock(&self.budget);
        let rate = f64::from(self.settings.miss_budget_per_second);
        let now = Instant::now();
        let refill = now.duration_since(budget.refilled_at).as_secs_f64() * rate;
        budget.tokens = (budget.tokens + refill).min(rate);
        budget.refilled_at = now;
        if budget.tokens >= 1.0 {
            budget.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

// A poisoned lock only means another request panicked mid-update of a plain map; the data is
// still a valid cache, so keep serving it rather than propagating the panic.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
