//! The manager's core, free of HTTP and of the consumer loop: create, renew, recreate and retire
//! one tenant's subscriptions, and the pass that compares connected tenants with the registry.
//!
//! Every decision reads the injectable [`Clock`]; every outcome is written to the registry
//! (`subscription_slots`) before the next one is taken, so a process killed at any point leaves
//! a slot that the next pass (on any replica) picks up.

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::settings::ManagerSettings;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cardsync_bus::{Outgoing, PublishError, Publisher, Transience, routing};
use cardsync_graph::{GraphClient, GraphError, NewSubscription, TenantConnection};
use cardsync_proto as proto;
use cardsync_store::StoreError;
use cardsync_store::connections::{ConnectionError, Keyring};
use cardsync_store::subscription_slots::{self as slots, Slot, SlotState};
use cardsync_store::subscriptions::{ClientStateHash, Subscription};
use cardsync_telemetry::error_chain;
use rand::Rng as _;
use secrecy::{ExposeSecret as _, SecretString};
use sqlx::PgPool;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::Semaphore;
use uuid::Uuid;

/// Every connected tenant's users.
pub const USERS: &str = "/users";
/// The groups of a tenant scoped to groups (membership changes notify at once).
pub const GROUPS: &str = "/groups";
/// Users and groups support only these (graph-facts §0.3).
const CHANGE_TYPE: &str = "updated,deleted";

/// Why the manager could not do its part; Graph's refusals are not errors but outcomes,
/// recorded on the slot.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// The registry could not be read or written.
    #[error("the subscription registry is unavailable")]
    Store(#[from] StoreError),
    /// A tenant's stored credential could not be opened.
    #[error("the tenant's connection cannot be opened")]
    Connection(#[from] ConnectionError),
    /// A catch-up request was not confirmed by the broker.
    #[error("publishing a catch-up sync request failed")]
    Publish(#[from] PublishError),
    /// A lifecycle event names a subscription whose create has not been registered yet.
    #[error("the subscription is still being created")]
    NotYetRegistered,
}

impl Transience for ManagerError {
    fn is_transient(&self) -> bool {
        match self {
            ManagerError::Store(error) => error.is_transient(),
            ManagerError::Connection(ConnectionError::Store(error)) => error.is_transient(),
            ManagerError::Connection(_) => false,
            ManagerError::Publish(_) | ManagerError::NotYetRegistered => true,
        }
    }
}

/// What happened to one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Graph created a subscription; it is registered.
    Created,
    /// Graph renewed it.
    Renewed,
    /// The subscription was gone; a new one was asked for.
    Recreated,
    /// Deleted in Graph (when the credential was still there) and in the registry.
    Retired,
    /// Another create of the slot is in flight; nothing done.
    Busy,
    /// Graph refused or failed; the slot says why and when it is tried again.
    Failed,
    /// Graph's subscription quota for the app in the tenant is reached.
    QuotaExceeded,
    /// The tenant has no connection.
    NoConnection,
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Subscriptions created.
    pub created: usize,
    /// Subscriptions renewed.
    pub renewed: usize,
    /// Slots retired (unwanted resource, disconnected tenant).
    pub retired: usize,
    /// Operations that failed (retried later).
    pub failed: usize,
    /// Tenants whose requested disconnect completed.
    pub disconnected: usize,
}

impl PassReport {
    fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Created | Outcome::Recreated => self.created += 1,
            Outcome::Renewed => self.renewed += 1,
            Outcome::Retired => self.retired += 1,
            Outcome::Failed | Outcome::QuotaExceeded => self.failed += 1,
            Outcome::Busy | Outcome::NoConnection => {}
        }
    }
}

/// What the manager is built from.
#[derive(Debug)]
pub struct ManagerParts {
    /// The registry and the tenants' connections.
    pub pool: PgPool,
    /// Graph.
    pub graph: GraphClient,
    /// Opens sealed credentials.
    pub sealing: Arc<Keyring>,
    /// Publishes catch-up sync requests.
    pub publisher: Publisher,
    /// Full name of the sync exchange.
    pub sync_exchange: String,
    /// How subscriptions are kept.
    pub settings: ManagerSettings,
    /// Its clock.
    pub clock: Clock,
    /// Its metrics.
    pub metrics: Metrics,
}

/// Keeps tenants subscribed. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    parts: ManagerParts,
    graph_calls: Semaphore,
    notification_url: String,
    lifecycle_url: String,
}

impl Manager {
    /// A manager over `parts`.
    pub fn new(parts: ManagerParts) -> Self {
        let graph_calls = Semaphore::new(parts.settings.concurrency);
        let notification_url = parts.settings.notification_url();
        let lifecycle_url = parts.settings.lifecycle_url();
        Self {
            inner: Arc::new(Inner {
                parts,
                graph_calls,
                notification_url,
                lifecycle_url,
            }),
        }
    }

    /// The clock every decision reads.
    pub fn clock(&self) -> &Clock {
        &self.inner.parts.clock
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.inner.parts.pool
    }

    pub(crate) fn graph(&self) -> &GraphClient {
        &self.inner.parts.graph
    }

    /// Its metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.parts.metrics
    }

    pub(crate) fn settings(&self) -> &ManagerSettings {
        &self.inner.parts.settings
    }

    /// Where cardsync's subscriptions deliver (what tells them from other apps' in Graph's list).
    pub fn notification_url(&self) -> &str {
        &self.inner.notification_url
    }

    fn now(&self) -> OffsetDateTime {
        self.inner.parts.clock.now()
    }

    /// One pass over every tenant: creates the subscriptions of newly connected tenants, retries
    /// failed creates whose time came, renews what is due, and retires what is no longer wanted
    /// (a scope without groups, a requested disconnect, a removed connection). Graph calls run
    /// concurrently, `concurrency` at most.
    pub async fn reconcile(&self) -> Result<PassReport, ManagerError> {
        let now = self.now();
        let pool = self.pool();
        let wanted = slots::wanted(pool).await?;
        let current = slots::all(pool).await?;
        let disconnecting: HashSet<Uuid> = slots::disconnecting(pool).await?.into_iter().collect();
        let mut desired: HashSet<(Uuid, &'static str)> = HashSet::new();
        for tenant in &wanted {
            self.metrics().know_tenant(tenant.tenant_id);
            desired.insert((tenant.tenant_id, USERS));
            if tenant.groups {
                desired.insert((tenant.tenant_id, GROUPS));
            }
        }
        let mut work = tokio::task::JoinSet::new();
        let held: HashSet<(Uuid, &str)> = current
            .iter()
            .map(|s| (s.tenant_id, s.resource.as_str()))
            .collect();
        for &(tenant, resource) in &desired {
            if !held.contains(&(tenant, resource)) {
                let manager = self.clone();
                work.spawn(async move { manager.create(tenant, resource, 0, false).await });
            }
        }
        for slot in current {
            let wanted_here = desired.contains(&(slot.tenant_id, slot.resource.as_str()));
            let due = slot.next_attempt_at.is_none_or(|at| at <= now);
            let manager = self.clone();
            if !wanted_here {
                if slot.failures == 0 || due {
                    work.spawn(async move { manager.retire(&slot).await });
                }
                continue;
            }
            match slot.state {
                SlotState::Active if due => {
                    match (slot.recreate_requested_at, slot.subscription_id) {
                        (Some(_), Some(old)) => {
                            work.spawn(async move { manager.recreate_by_hand(&slot, old).await });
                        }
                        _ => {
                            work.spawn(async move { manager.renew(&slot).await });
                        }
                    }
                }
                SlotState::Retrying | SlotState::QuotaExceeded if due => {
                    // A slot that was active once lost its subscription: catch up when it is back.
                    let catch_up = slot.renewed_at.is_some();
                    work.spawn(async move {
                        let resource = static_resource(&slot.resource);
                        manager
                            .create(slot.tenant_id, resource, slot.failures, catch_up)
                            .await
                    });
                }
                SlotState::Creating if slot.pending_until.is_none_or(|until| until <= now) => {
                    // A create that never finished (its process died): try again.
                    let catch_up = slot.renewed_at.is_some();
                    work.spawn(async move {
                        let resource = static_resource(&slot.resource);
                        manager
                            .create(slot.tenant_id, resource, slot.failures, catch_up)
                            .await
                    });
                }
                _ => {}
            }
        }
        let mut report = PassReport::default();
        let mut first_error = None;
        while let Some(joined) = work.join_next().await {
            match joined {
                Ok(Ok(outcome)) => report.count(outcome),
                Ok(Err(error)) => {
                    report.failed += 1;
                    tracing::warn!(error = %error_chain(&error), "subscription operation failed");
                    first_error.get_or_insert(error);
                }
                Err(panic) => tracing::error!(error = %panic, "subscription task panicked"),
            }
        }
        for tenant in disconnecting {
            let left = slots::for_tenant(pool, tenant).await?;
            if left.is_empty() && slots::finish_disconnect(pool, tenant).await? {
                tracing::info!(%tenant, "tenant disconnected: its subscriptions are deleted");
                report.disconnected += 1;
            }
        }
        self.metrics().observe(&slots::all(pool).await?, self.now());
        match first_error {
            Some(error) if report.created + report.renewed + report.retired == 0 => Err(error),
            _ => Ok(report),
        }
    }

    /// Creates the subscription of one slot. The fresh clientState's hash is registered as
    /// pending before Graph is asked, so Graph's first notifications (which can come before its
    /// 201) are verified; a claim makes sure no other replica creates the same slot meanwhile.
    pub async fn create(
        &self,
        tenant: Uuid,
        resource: &'static str,
        failures: i32,
        catch_up: bool,
    ) -> Result<Outcome, ManagerError> {
        // The whole create holds a permit, so a thousand tenants connected at once wait here
        // instead of queueing for the database pool.
        let _permit = self.inner.graph_calls.acquire().await;
        let Some(connection) = self.connection(tenant).await? else {
            return Ok(Outcome::NoConnection);
        };
        let settings = self.settings();
        let client_state = fresh_client_state();
        let hash = ClientStateHash::of(client_state.expose_secret());
        let now = self.now();
        let pending_until = now + settings.pending_ttl;
        if !slots::begin_create(self.pool(), tenant, resource, &hash, pending_until, now).await? {
            return Ok(Outcome::Busy);
        }
        let request = NewSubscription {
            resource,
            change_type: CHANGE_TYPE,
            notification_url: &self.inner.notification_url,
            lifecycle_notification_url: &self.inner.lifecycle_url,
            client_state: &client_state,
            expires_at: now + settings.lifetime,
        };
        let created = self
            .graph()
            .create_subscription(&connection, &request)
            .await;
        let now = self.now();
        let failure = match created {
            Ok(created) => match Uuid::parse_str(&created.id) {
                Ok(id) => {
                    let row = Subscription {
                        id,
                        tenant_id: tenant,
                        resource: resource.to_owned(),
                        client_state: hash,
                        expires_at: created.expires_at,
                    };
                    slots::activate(self.pool(), &row, self.next_renewal(now), now).await?;
                    self.metrics().operation("create", "ok");
                    tracing::info!(%tenant, resource, subscription = %id, expires_at = %created.expires_at, "subscription created");
                    if catch_up {
                        self.catch_up(tenant, proto::sync_request::Depth::Info)
                            .await?;
                    }
                    return Ok(Outcome::Created);
                }
                Err(_) => format!("Graph gave an id that is not a GUID: {:?}", created.id),
            },
            Err(GraphError::SubscriptionQuota { message }) => {
                let error = format!("Graph's subscription quota is reached: {message}");
                slots::failed(
                    self.pool(),
                    tenant,
                    resource,
                    SlotState::QuotaExceeded,
                    &error,
                    now + settings.quota_retry,
                    now,
                )
                .await?;
                self.metrics().operation("create", "quota_exceeded");
                tracing::warn!(%tenant, resource, %error, "subscription quota reached");
                return Ok(Outcome::QuotaExceeded);
            }
            Err(GraphError::Conflict { message }) => {
                // An earlier create of ours whose answer was lost, most likely: delete it (only
                // if it delivers to us) and create again at the next pass.
                let cleared = self.clear_conflict(&connection, tenant, resource).await;
                format!("Graph reports a conflicting subscription ({message}); {cleared}")
            }
            Err(error) => error_chain(&error),
        };
        let delay = self.retry_delay(failures + 1);
        slots::failed(
            self.pool(),
            tenant,
            resource,
            SlotState::Retrying,
            &failure,
            now + delay,
            now,
        )
        .await?;
        self.metrics().operation("create", "failed");
        tracing::warn!(%tenant, resource, error = %failure, retry_in = ?delay, "subscription create failed");
        Ok(Outcome::Failed)
    }

    /// Renews a slot's subscription (which also reauthorizes it). A 404 means it is gone: a new
    /// one is created and a catch-up round asked for.
    pub async fn renew(&self, slot: &Slot) -> Result<Outcome, ManagerError> {
        let resource = static_resource(&slot.resource);
        let Some(id) = slot.subscription_id else {
            return self
                .create(slot.tenant_id, resource, slot.failures, true)
                .await;
        };
        let Some(connection) = self.connection(slot.tenant_id).await? else {
            return Ok(Outcome::NoConnection);
        };
        let now = self.now();
        let renewed = {
            let _permit = self.inner.graph_calls.acquire().await;
            self.graph()
                .renew_subscription(&connection, &id.to_string(), now + self.settings().lifetime)
                .await
        };
        let now = self.now();
        match renewed {
            Ok(renewed) => {
                slots::renewed(
                    self.pool(),
                    slot.tenant_id,
                    &slot.resource,
                    id,
                    renewed.expires_at,
                    self.next_renewal(now),
                    now,
                )
                .await?;
                self.metrics().operation("renew", "ok");
                tracing::debug!(tenant = %slot.tenant_id, resource, subscription = %id, expires_at = %renewed.expires_at, "subscription renewed");
                Ok(Outcome::Renewed)
            }
            Err(GraphError::NotFound) => {
                self.metrics().operation("renew", "gone");
                self.recreate(
                    slot,
                    id,
                    "the renewal was answered 404: Graph no longer has the subscription",
                )
                .await
            }
            Err(error) => {
                let delay = self.retry_delay(slot.failures + 1);
                let error = error_chain(&error);
                slots::failed(
                    self.pool(),
                    slot.tenant_id,
                    &slot.resource,
                    SlotState::Active,
                    &error,
                    now + delay,
                    now,
                )
                .await?;
                self.metrics().operation("renew", "failed");
                tracing::warn!(tenant = %slot.tenant_id, resource, subscription = %id, %error, retry_in = ?delay, "subscription renewal failed");
                Ok(Outcome::Failed)
            }
        }
    }

    /// An operator asked for a new subscription (`POST …/subscriptions/recreate`): the old one is
    /// deleted in Graph first (Graph refuses a second subscription of the same combination),
    /// then replaced as a lost one would be, with a catch-up round for what changed meanwhile.
    /// If the delete fails, the create's conflict handling removes the old one and retries.
    pub async fn recreate_by_hand(&self, slot: &Slot, old: Uuid) -> Result<Outcome, ManagerError> {
        if let Some(connection) = self.connection(slot.tenant_id).await? {
            let deleted = {
                let _permit = self.inner.graph_calls.acquire().await;
                self.graph()
                    .delete_subscription(&connection, &old.to_string())
                    .await
            };
            if let Err(error) = deleted {
                tracing::info!(tenant = %slot.tenant_id, subscription = %old, %error, "deleting the replaced subscription failed; the create's conflict handling removes it");
            }
        }
        self.recreate(slot, old, "recreate requested by an operator")
            .await
    }

    /// The slot's subscription `gone` no longer exists in Graph: unregisters it, creates a new
    /// one and asks for a catch-up round (Graph notified nothing while there was none).
    pub async fn recreate(
        &self,
        slot: &Slot,
        gone: Uuid,
        why: &str,
    ) -> Result<Outcome, ManagerError> {
        let now = self.now();
        if !slots::lost(self.pool(), slot.tenant_id, &slot.resource, gone, why, now).await? {
            return Ok(Outcome::Busy);
        }
        tracing::warn!(tenant = %slot.tenant_id, resource = %slot.resource, subscription = %gone, why, "subscription lost; creating a new one");
        let resource = static_resource(&slot.resource);
        match self.create(slot.tenant_id, resource, 0, true).await? {
            Outcome::Created => Ok(Outcome::Recreated),
            other => Ok(other),
        }
    }

    /// Deletes a slot's subscription in Graph, while the tenant's credential is there, and the
    /// slot. Without a credential (the connection was removed outright) Graph cannot be asked:
    /// the registry forgets the subscription at once, so the webhook drops its notifications,
    /// and Graph ends it at its expiry.
    pub async fn retire(&self, slot: &Slot) -> Result<Outcome, ManagerError> {
        if let Some(id) = slot.subscription_id {
            match self.connection(slot.tenant_id).await? {
                Some(connection) => {
                    let deleted = {
                        let _permit = self.inner.graph_calls.acquire().await;
                        self.graph()
                            .delete_subscription(&connection, &id.to_string())
                            .await
                    };
                    if let Err(error) = deleted {
                        let now = self.now();
                        let error = error_chain(&error);
                        slots::failed(
                            self.pool(),
                            slot.tenant_id,
                            &slot.resource,
                            slot.state,
                            &format!("deleting the subscription failed: {error}"),
                            now + self.retry_delay(slot.failures + 1),
                            now,
                        )
                        .await?;
                        self.metrics().operation("delete", "failed");
                        return Ok(Outcome::Failed);
                    }
                    self.metrics().operation("delete", "ok");
                }
                None => {
                    tracing::warn!(tenant = %slot.tenant_id, subscription = %id, expires_at = ?slot.expires_at, "tenant has no connection: its subscription is unregistered and lapses in Graph at its expiry")
                }
            }
        }
        slots::remove(self.pool(), slot.tenant_id, &slot.resource).await?;
        tracing::info!(tenant = %slot.tenant_id, resource = %slot.resource, "subscription retired");
        Ok(Outcome::Retired)
    }

    /// Asks the delta-worker for a round of `tenant`: `Info` runs delta from the stored link (what
    /// changed while notifications were missing), `Full` enumerates everything.
    pub async fn catch_up(
        &self,
        tenant: Uuid,
        depth: proto::sync_request::Depth,
    ) -> Result<(), ManagerError> {
        let tenant = tenant.to_string();
        let request = proto::SyncRequest {
            envelope: Some(proto::Envelope::new(&tenant, proto::Cause::Lifecycle)),
            scope: proto::sync_request::Scope::Tenant as i32,
            depth: depth as i32,
            ..Default::default()
        };
        self.inner
            .parts
            .publisher
            .publish_all(vec![Outgoing::new(
                &self.inner.parts.sync_exchange,
                &routing::sync_request(&tenant),
                &request,
            )])
            .await?;
        tracing::info!(%tenant, ?depth, "catch-up round requested");
        Ok(())
    }

    /// Deletes cardsync's own subscriptions to `resource` that the registry does not hold.
    async fn clear_conflict(
        &self,
        connection: &TenantConnection,
        tenant: Uuid,
        resource: &str,
    ) -> String {
        let listed = match self.graph().list_subscriptions(connection).await {
            Ok(listed) => listed,
            Err(error) => return format!("listing them failed: {}", error_chain(&error)),
        };
        let registered: HashSet<Uuid> = match slots::for_tenant(self.pool(), tenant).await {
            Ok(held) => held.into_iter().filter_map(|s| s.subscription_id).collect(),
            Err(error) => return format!("reading the registry failed: {}", error_chain(&error)),
        };
        let mut deleted = 0;
        for sub in listed.iter().filter(|s| {
            s.notification_url == self.inner.notification_url
                && same_resource(&s.resource, resource)
                && Uuid::parse_str(&s.id).is_ok_and(|id| !registered.contains(&id))
        }) {
            if self
                .graph()
                .delete_subscription(connection, &sub.id)
                .await
                .is_ok()
            {
                deleted += 1;
            }
        }
        if deleted == 0 {
            "none of them delivers to this deployment: an operator must remove it".into()
        } else {
            format!("deleted {deleted} unregistered subscription(s) of ours")
        }
    }

    pub(crate) async fn connection(
        &self,
        tenant: Uuid,
    ) -> Result<Option<TenantConnection>, ManagerError> {
        Ok(
            cardsync_rounds::connection::open(self.pool(), &self.inner.parts.sealing, tenant)
                .await?,
        )
    }

    /// When to renew a subscription renewed or created at `now`: `renew_after` less a random part
    /// of `renew_jitter`, so subscriptions created together spread their renewals.
    fn next_renewal(&self, now: OffsetDateTime) -> OffsetDateTime {
        let settings = self.settings();
        let jitter = settings.renew_jitter.mul_f64(rand::rng().random::<f64>());
        now + settings.renew_after.saturating_sub(jitter)
    }

    /// Exponential backoff after `failures` consecutive failures, capped.
    fn retry_delay(&self, failures: i32) -> Duration {
        let settings = self.settings();
        let exponent = u32::try_from(failures.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
        settings
            .retry_base
            .saturating_mul(1u32 << exponent)
            .min(settings.retry_cap)
    }
}

/// A fresh clientState: 32 random bytes, base64url (43 characters, under Graph's 128).
fn fresh_client_state() -> SecretString {
    let bytes: [u8; 32] = rand::rng().random();
    SecretString::from(URL_SAFE_NO_PAD.encode(bytes))
}

/// The resource constant a slot's stored resource names (slots only ever hold these two).
pub(crate) fn static_resource(resource: &str) -> &'static str {
    if same_resource(resource, GROUPS) {
        GROUPS
    } else {
        USERS
    }
}

/// Graph spells resources with or without the leading slash and in any case (`Users`).
pub(crate) fn same_resource(a: &str, b: &str) -> bool {
    a.trim_start_matches('/')
        .eq_ignore_ascii_case(b.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_client_state_is_long_random_and_within_graphs_limit() {
        let (a, b) = (fresh_client_state(), fresh_client_state());
        assert_eq!(a.expose_secret().len(), 43);
        assert_ne!(a.expose_secret(), b.expose_secret());
    }

    #[test]
    fn resources_compare_as_graph_spells_them() {
        assert!(same_resource("Users", "/users"));
        assert!(!same_resource("/groups", "/users"));
        assert_eq!(static_resource("groups"), GROUPS);
    }
}
