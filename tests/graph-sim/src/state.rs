//! The simulator's shared state: tenants, apps, directories, subscriptions, profiles and counters.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::clock::{SimClock, graph_time};
use crate::delivery::{Notifier, Outcome, Outgoing};
use crate::directory::{DirEvent, Directory, DirectoryError, Mutation};
use crate::identity::{AppRegistration, JtiCache, KeyRing, SigningKey};
use crate::subscriptions::{
    self, Subscription, SubscriptionBody, SubscriptionError, SubscriptionPolicy,
};
use crate::throttle::{FaultRule, Throttle, ThrottleProfile};

/// Locks a mutex, ignoring poisoning (a panicked handler must not wedge the simulator).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Read-locks, ignoring poisoning.
pub fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Write-locks, ignoring poisoning.
pub fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Per-tenant delta switches (control API `PUT /control/tenants/{t}/delta`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeltaSettings {
    /// Page size when the client sends no `Prefer: odata.maxpagesize`.
    pub default_page_size: usize,
    /// `members@delta` entries per page for one group.
    pub member_slice: usize,
    /// Emit every n-th entry twice (0 = off).
    pub replay_every: usize,
    /// Start every round with an empty page carrying a nextLink.
    pub empty_first_page: bool,
    /// Delta tokens older than this (simulated seconds) get `410 syncStateNotFound` (7 days).
    pub token_max_age_secs: i64,
    /// The next n delta-link requests get `410 Gone` with a `Location` for a full resync.
    pub resync_next: u32,
    /// Initial rounds report objects removed within this many simulated seconds as `@removed` (7 days, the
    /// directory delta-token lifetime; 0 = never).
    pub initial_removed_window_secs: i64,
}

impl Default for DeltaSettings {
    fn default() -> Self {
        Self {
            default_page_size: 100,
            member_slice: 20,
            replay_every: 0,
            empty_first_page: false,
            token_max_age_secs: 7 * 24 * 3600,
            resync_next: 0,
            initial_removed_window_secs: 7 * 24 * 3600,
        }
    }
}

/// What the photo metadata of a user without a photo answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MissingPhoto {
    /// `200` with a 1x1 `image/gif` and an empty `@odata.mediaEtag`, as the profilePhoto doc's example shows.
    #[default]
    Placeholder,
    /// `404 ImageNotFound`, as `/photo/$value` answers (and as many tenants answer for the metadata too).
    NotFound,
}

/// Per-tenant photo switches (control API `PUT /control/tenants/{t}/photos`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PhotoSettings {
    /// The answer for the metadata of a user without a photo.
    pub missing: MissingPhoto,
}

/// One tenant.
#[derive(Debug)]
pub struct Tenant {
    /// Tenant id (GUID).
    pub id: String,
    /// Initial domain (`contoso.onmicrosoft.com`), also accepted in the token URL.
    pub domain: String,
    /// The directory.
    pub dir: RwLock<Directory>,
    /// App registrations by client id.
    pub apps: RwLock<HashMap<String, AppRegistration>>,
    /// Subscriptions by id.
    pub subs: Mutex<HashMap<String, Subscription>>,
    /// Delta switches.
    pub delta: Mutex<DeltaSettings>,
    /// Photo switches.
    pub photos: Mutex<PhotoSettings>,
}

/// Request counts of one endpoint in one tenant.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counter {
    /// All requests.
    pub requests: u64,
    /// Requests by response status.
    pub by_status: BTreeMap<u16, u64>,
}

/// What a mutation reports back: its sequence and when it happened (for change → card latency).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MutationReport {
    /// Directory sequence after the change.
    pub sequence: u64,
    /// When the change happened (sim clock, ISO 8601).
    pub changed_at: String,
    /// The same instant in Unix milliseconds.
    pub changed_at_unix_ms: i128,
    /// Notifications queued for it.
    pub notifications: usize,
}

/// Settings fixed at start-up.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Access token lifetime in seconds (`expires_in`).
    pub token_lifetime_secs: i64,
}

/// The whole simulator.
#[derive(Debug)]
pub struct Sim {
    /// The clock.
    pub clock: Arc<SimClock>,
    /// Token-signing keys.
    pub keys: KeyRing,
    /// Used assertion ids.
    pub jtis: JtiCache,
    /// Start-up settings.
    pub settings: Settings,
    /// Outbound HTTP (validation, notifications).
    pub http: reqwest::Client,
    /// Notification delivery.
    pub notifier: Notifier,
    /// Throttle buckets.
    pub throttle: Mutex<Throttle>,
    /// Throttle settings.
    pub throttle_profile: Mutex<ThrottleProfile>,
    /// Fault rules.
    pub faults: Mutex<Vec<FaultRule>>,
    /// Subscription switches.
    pub sub_policy: Mutex<SubscriptionPolicy>,
    tenants: RwLock<HashMap<String, Arc<Tenant>>>,
    counters: Mutex<BTreeMap<(String, String), Counter>>,
}

impl Sim {
    /// Builds the simulator state.
    pub fn new(
        clock: Arc<SimClock>,
        keys: SigningKey,
        settings: Settings,
        http: reqwest::Client,
        notifier: Notifier,
    ) -> Self {
        Self {
            clock,
            keys: KeyRing::new(keys),
            jtis: JtiCache::default(),
            settings,
            http,
            notifier,
            throttle: Mutex::new(Throttle::default()),
            throttle_profile: Mutex::new(ThrottleProfile::default()),
            faults: Mutex::new(Vec::new()),
            sub_policy: Mutex::new(SubscriptionPolicy::default()),
            tenants: RwLock::new(HashMap::new()),
            counters: Mutex::new(BTreeMap::new()),
        }
    }

    /// Creates a tenant (id and domain generated when absent); an existing id is returned as is.
    pub fn create_tenant(&self, id: Option<String>, domain: Option<String>) -> Arc<Tenant> {
        let id = id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let mut tenants = write(&self.tenants);
        if let Some(t) = tenants.get(&id) {
            return t.clone();
        }
        let domain =
            domain.unwrap_or_else(|| format!("t{}.onmicrosoft.com", &id[..8.min(id.len())]));
        let t = Arc::new(Tenant {
            id: id.clone(),
            domain,
            dir: RwLock::new(Directory::default()),
            apps: RwLock::new(HashMap::new()),
            subs: Mutex::new(HashMap::new()),
            delta: Mutex::new(DeltaSettings::default()),
            photos: Mutex::new(PhotoSettings::default()),
        });
        tenants.insert(id, t.clone());
        t
    }

    /// A tenant by id or domain.
    pub fn tenant(&self, key: &str) -> Option<Arc<Tenant>> {
        let tenants = read(&self.tenants);
        tenants.get(key).cloned().or_else(|| {
            tenants
                .values()
                .find(|t| t.domain.eq_ignore_ascii_case(key))
                .cloned()
        })
    }

    /// Removes a tenant (its tokens then get 401).
    pub fn delete_tenant(&self, id: &str) -> bool {
        write(&self.tenants).remove(id).is_some()
    }

    /// Applies a directory mutation, stamps its time and queues the change notifications.
    pub fn mutate<F>(&self, tenant: &Tenant, f: F) -> Result<MutationReport, DirectoryError>
    where
        F: FnOnce(&mut Directory) -> Result<Mutation, DirectoryError>,
    {
        // Superseded change-log entries older than the token age limit can't matter to any readable round.
        let keep_secs = lock(&tenant.delta).token_max_age_secs;
        let (mutation, at) = {
            let mut dir = write(&tenant.dir);
            let now = self.clock.now().unix_timestamp();
            dir.set_now(now);
            dir.prune_superseded(now.saturating_sub(keep_secs));
            let m = f(&mut dir)?;
            (m, self.clock.now())
        };
        let notifications = self.notify(tenant, &mutation.events, at);
        Ok(MutationReport {
            sequence: mutation.seq,
            changed_at: graph_time(at),
            changed_at_unix_ms: at.unix_timestamp_nanos() / 1_000_000,
            notifications,
        })
    }

    /// Queues change notifications for events; returns how many.
    pub fn notify(&self, tenant: &Tenant, events: &[DirEvent], at: OffsetDateTime) -> usize {
        let now = self.clock.now();
        let subs: Vec<Subscription> = lock(&tenant.subs)
            .values()
            .filter(|s| s.expiration > now)
            .cloned()
            .collect();
        if subs.is_empty() {
            return 0;
        }
        let mut count = 0;
        for ev in events {
            for sub in subs
                .iter()
                .filter(|s| s.target.matches(ev) && s.wants(ev.change))
            {
                let notification = subscriptions::change_notification(sub, &tenant.id, ev, at);
                let out = Outgoing {
                    tenant_id: tenant.id.clone(),
                    subscription_id: sub.id.clone(),
                    url: sub.notification_url.clone(),
                    notification,
                };
                if sub.is_paused(now) {
                    // Graph never sends what changed while a subscription waited for reauthorization.
                    self.notifier
                        .withhold(out, Outcome::PausedReauthorizationRequired);
                    continue;
                }
                self.notifier.send(out);
                count += 1;
            }
        }
        count
    }

    /// Sends a lifecycle notification for a subscription to its lifecycle URL.
    pub fn send_lifecycle(&self, tenant: &Tenant, sub: &Subscription, event: &str) -> bool {
        let Some(url) = sub.lifecycle_url.clone() else {
            return false;
        };
        let notification = subscriptions::lifecycle_notification(sub, &tenant.id, event);
        self.notifier.send(Outgoing {
            tenant_id: tenant.id.clone(),
            subscription_id: sub.id.clone(),
            url,
            notification,
        });
        true
    }

    /// Counts a request.
    pub fn count(&self, tenant: &str, endpoint: &str, status: u16) {
        let mut counters = lock(&self.counters);
        let c = counters
            .entry((tenant.to_owned(), endpoint.to_owned()))
            .or_default();
        c.requests += 1;
        *c.by_status.entry(status).or_default() += 1;
    }

    /// Request counters as `{tenant: {endpoint: counter}}`.
    pub fn counters(&self, tenant: Option<&str>) -> Value {
        let counters = lock(&self.counters);
        let mut out: BTreeMap<&str, BTreeMap<&str, &Counter>> = BTreeMap::new();
        for ((t, e), c) in counters
            .iter()
            .filter(|((t, _), _)| tenant.is_none_or(|x| x == t))
        {
            out.entry(t.as_str()).or_default().insert(e.as_str(), c);
        }
        json!(out)
    }

    /// Creates a subscription: checks, limits, the validation handshake(s), then stores it.
    pub async fn create_subscription(
        &self,
        tenant: &Tenant,
        app: &AppRegistration,
        body: SubscriptionBody,
    ) -> Result<Subscription, SubscriptionError> {
        let policy = lock(&self.sub_policy).clone();
        let now = self.clock.now();
        let (target, expiration) = subscriptions::check_create(&body, &policy, now)?;
        let change_type = body.change_type.clone().unwrap_or_default();
        let resource = body.resource.clone().unwrap_or_default();
        self.check_limits(tenant, &app.client_id, &target, &change_type)?;
        let timeout = Duration::from_millis(policy.validation_timeout_ms);
        let url = body.notification_url.clone().unwrap_or_default();
        subscriptions::validate_endpoint(&self.http, &url, timeout).await?;
        if let Some(lc) = &body.lifecycle_notification_url {
            subscriptions::validate_endpoint(&self.http, lc, timeout).await?;
        }
        self.check_limits(tenant, &app.client_id, &target, &change_type)?;
        let sub = Subscription {
            id: uuid::Uuid::new_v4().to_string(),
            resource,
            target,
            change_type,
            notification_url: url,
            lifecycle_url: body.lifecycle_notification_url,
            client_state: body.client_state,
            expiration,
            application_id: app.client_id.clone(),
            creator_id: app.service_principal_id.clone(),
            tls_version: body
                .latest_supported_tls_version
                .unwrap_or_else(|| "v1_2".to_owned()),
            reauthorization_sent: false,
            paused_from: None,
        };
        lock(&tenant.subs).insert(sub.id.clone(), sub.clone());
        Ok(sub)
    }

    fn check_limits(
        &self,
        tenant: &Tenant,
        app: &str,
        target: &subscriptions::Target,
        change_type: &str,
    ) -> Result<(), SubscriptionError> {
        let now = self.clock.now();
        let mut subs = lock(&tenant.subs);
        subs.retain(|_, s| s.expiration > now);
        let mine: Vec<&Subscription> = subs.values().filter(|s| s.application_id == app).collect();
        if let Some(dup) = mine
            .iter()
            .find(|s| &s.target == target && s.change_type == change_type)
        {
            return Err(SubscriptionError::Duplicate(dup.id.clone()));
        }
        if mine.len() >= subscriptions::MAX_PER_APP_TENANT {
            return Err(SubscriptionError::Quota);
        }
        Ok(())
    }

    /// A live subscription of this app.
    pub fn subscription(
        &self,
        tenant: &Tenant,
        app: &str,
        id: &str,
    ) -> Result<Subscription, SubscriptionError> {
        let now = self.clock.now();
        let mut subs = lock(&tenant.subs);
        subs.retain(|_, s| s.expiration > now);
        subs.get(id)
            .filter(|s| s.application_id == app)
            .cloned()
            .ok_or(SubscriptionError::NotFound)
    }

    /// Live subscriptions of this app.
    pub fn subscriptions_of(&self, tenant: &Tenant, app: &str) -> Vec<Subscription> {
        let now = self.clock.now();
        let mut subs = lock(&tenant.subs);
        subs.retain(|_, s| s.expiration > now);
        let mut mine: Vec<Subscription> = subs
            .values()
            .filter(|s| s.application_id == app)
            .cloned()
            .collect();
        mine.sort_by(|a, b| a.id.cmp(&b.id));
        mine
    }

    /// Renews (and reauthorizes) a subscription; a new `notificationUrl` is validated first.
    pub async fn update_subscription(
        &self,
        tenant: &Tenant,
        app: &str,
        id: &str,
        body: SubscriptionBody,
    ) -> Result<Subscription, SubscriptionError> {
        let current = self.subscription(tenant, app, id)?;
        if body.expiration_date_time.is_none() && body.notification_url.is_none() {
            return Err(SubscriptionError::Missing("expirationDateTime"));
        }
        if body.lifecycle_notification_url.is_some() {
            return Err(SubscriptionError::Invalid("lifecycleNotificationUrl can't be added or changed by PATCH. Delete the subscription and create it again.".into()));
        }
        let policy = lock(&self.sub_policy).clone();
        let now = self.clock.now();
        let expiration = match body.expiration_date_time.as_deref() {
            Some(raw) => Some(subscriptions::effective_expiry(raw, &policy, now)?),
            None => None,
        };
        if let Some(url) = body
            .notification_url
            .as_deref()
            .filter(|u| *u != current.notification_url)
        {
            subscriptions::check_url(url, &policy)?;
            subscriptions::validate_endpoint(
                &self.http,
                url,
                Duration::from_millis(policy.validation_timeout_ms),
            )
            .await?;
        }
        let mut subs = lock(&tenant.subs);
        let sub = subs
            .get_mut(id)
            .filter(|s| s.expiration > now)
            .ok_or(SubscriptionError::NotFound)?;
        if let Some(exp) = expiration {
            sub.expiration = exp;
        }
        if let Some(url) = body.notification_url {
            sub.notification_url = url;
        }
        sub.answer_challenge();
        Ok(sub.clone())
    }

    /// `POST /subscriptions/{id}/reauthorize`: clears the pending challenge, keeps the expiry.
    pub fn reauthorize_subscription(
        &self,
        tenant: &Tenant,
        app: &str,
        id: &str,
    ) -> Result<(), SubscriptionError> {
        self.subscription(tenant, app, id)?;
        if let Some(s) = lock(&tenant.subs).get_mut(id) {
            s.answer_challenge();
        }
        Ok(())
    }

    /// Sends `reauthorizationRequired` for a subscription now (control API) and starts its pause as
    /// [`Sim::tick`] does; `None` if the subscription does not exist.
    pub fn challenge_subscription(&self, tenant: &Tenant, id: &str) -> Option<Subscription> {
        let grace = time::Duration::minutes(lock(&self.sub_policy).pause_after_minutes);
        let now = self.clock.now();
        let sub = {
            let mut subs = lock(&tenant.subs);
            let s = subs.get_mut(id)?;
            s.challenge(now, grace);
            s.clone()
        };
        self.send_lifecycle(tenant, &sub, "reauthorizationRequired");
        Some(sub)
    }

    /// Deletes a subscription.
    pub fn delete_subscription(
        &self,
        tenant: &Tenant,
        app: &str,
        id: &str,
    ) -> Result<(), SubscriptionError> {
        self.subscription(tenant, app, id)?;
        lock(&tenant.subs).remove(id);
        Ok(())
    }

    /// Periodic housekeeping: sends `reauthorizationRequired` before expiry and forgets expired subscriptions.
    pub fn tick(&self) {
        let (before, grace) = {
            let policy = lock(&self.sub_policy);
            (
                time::Duration::minutes(policy.reauthorize_before_minutes),
                time::Duration::minutes(policy.pause_after_minutes),
            )
        };
        let now = self.clock.now();
        let tenants: Vec<Arc<Tenant>> = read(&self.tenants).values().cloned().collect();
        for tenant in tenants {
            let due: Vec<Subscription> = {
                let mut subs = lock(&tenant.subs);
                subs.retain(|_, s| s.expiration > now);
                subs.values_mut()
                    .filter(|s| !s.reauthorization_sent && s.expiration - now <= before)
                    .map(|s| {
                        s.challenge(now, grace);
                        s.clone()
                    })
                    .collect()
            };
            for sub in due {
                self.send_lifecycle(&tenant, &sub, "reauthorizationRequired");
            }
        }
    }
}
