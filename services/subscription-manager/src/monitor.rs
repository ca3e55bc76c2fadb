//! The monitor: one active replica (a PostgreSQL advisory lock held on a connection of its own)
//! runs the reconciliation pass every `tick` and, every `monitor_interval`, compares Graph's list
//! of the app's subscriptions in each tenant with the registry:
//!
//! - a registered subscription Graph no longer has is recreated (with a catch-up round);
//! - one whose expiry Graph reports inside the renewal window is renewed at once;
//! - one of cardsync's (it delivers to this deployment's notification URL) that the registry
//!   does not hold is an orphan and deleted, except while a create of that tenant is in flight
//!   (its 201 may not have been registered yet); anything else in the list is left alone.
//!
//! Graph allows 40 list calls per 20 s per app (graph-facts §4), so the sweep is paced at
//! `monitor_lists_per_second`.

use crate::manager::{Manager, ManagerError, Outcome, same_resource};
use cardsync_store::subscription_slots::{self as slots, SlotState};
use cardsync_telemetry::error_chain;
use sha2::{Digest as _, Sha256};
use sqlx::{Connection as _, PgConnection, PgPool};
use std::collections::HashSet;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// What one sweep found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Tenants whose list was read.
    pub tenants: usize,
    /// Orphans of cardsync's deleted.
    pub orphans_deleted: usize,
    /// Registered subscriptions Graph no longer had, recreated.
    pub recreated: usize,
    /// Subscriptions renewed because Graph's expiry was near.
    pub renewed: usize,
    /// Tenants whose list could not be read.
    pub failed: usize,
}

impl Manager {
    /// Compares Graph's list with the registry for every connected tenant (see the module).
    pub async fn sweep(&self) -> Result<SweepReport, ManagerError> {
        let mut report = SweepReport::default();
        let pace = Duration::from_secs(1) / self.settings().monitor_lists_per_second.max(1);
        for (index, wanted) in slots::wanted(self.pool()).await?.into_iter().enumerate() {
            if index > 0 {
                tokio::time::sleep(pace).await;
            }
            match self.sweep_tenant(wanted.tenant_id, &mut report).await {
                Ok(()) => report.tenants += 1,
                Err(error) => {
                    report.failed += 1;
                    tracing::warn!(tenant = %wanted.tenant_id, error = %error_chain(&error), "monitor could not check the tenant");
                }
            }
        }
        Ok(report)
    }

    async fn sweep_tenant(
        &self,
        tenant: Uuid,
        report: &mut SweepReport,
    ) -> Result<(), ManagerError> {
        let Some(connection) = self.connection(tenant).await? else {
            return Ok(());
        };
        let listed = match self.graph().list_subscriptions(&connection).await {
            Ok(listed) => listed,
            Err(error) => {
                tracing::warn!(%tenant, error = %error_chain(&error), "monitor cannot list the tenant's subscriptions");
                report.failed += 1;
                return Ok(());
            }
        };
        let now = self.clock().now();
        let held = slots::for_tenant(self.pool(), tenant).await?;
        let registered: HashSet<Uuid> = held.iter().filter_map(|s| s.subscription_id).collect();
        let creating = held
            .iter()
            .any(|s| s.state == SlotState::Creating && s.pending_until.is_some_and(|u| u > now));
        for orphan in listed.iter().filter(|s| {
            s.notification_url == self.notification_url()
                && Uuid::parse_str(&s.id).is_ok_and(|id| !registered.contains(&id))
        }) {
            if creating {
                continue;
            }
            if self
                .graph()
                .delete_subscription(&connection, &orphan.id)
                .await
                .is_ok()
            {
                report.orphans_deleted += 1;
                self.metrics()
                    .orphans_deleted
                    .with_label_values(&[&tenant.to_string()])
                    .inc();
                tracing::warn!(%tenant, subscription = %orphan.id, resource = %orphan.resource, "orphan subscription of ours deleted");
            }
        }
        let renew_window = self
            .settings()
            .lifetime
            .saturating_sub(self.settings().renew_after);
        for slot in held.iter().filter(|s| s.state == SlotState::Active) {
            let Some(id) = slot.subscription_id else {
                continue;
            };
            let in_graph = listed.iter().find(|s| {
                Uuid::parse_str(&s.id).is_ok_and(|listed| listed == id)
                    && same_resource(&s.resource, &slot.resource)
            });
            match in_graph {
                None => {
                    if self
                        .recreate(slot, id, "Graph's list no longer has the subscription")
                        .await?
                        == Outcome::Recreated
                    {
                        report.recreated += 1;
                    }
                }
                Some(sub) if sub.expires_at - now < renew_window => {
                    if self.renew(slot).await? == Outcome::Renewed {
                        report.renewed += 1;
                    }
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// The monitor lease: a session-level advisory lock on a connection of its own. PostgreSQL
/// releases it when that connection ends, so a killed replica frees it at once.
#[derive(Debug)]
pub struct Leadership {
    connection: PgConnection,
}

/// The lock key: one per topology prefix, so deployments (and tests) sharing a database each
/// have their own leader.
pub fn lease_key(prefix: &str) -> i64 {
    let digest = Sha256::digest(format!("cardsync subscription-manager monitor {prefix}"));
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

impl Leadership {
    /// Takes the lease if no other replica holds it.
    pub async fn try_take(pool: &PgPool, key: i64) -> Result<Option<Self>, sqlx::Error> {
        // A connection of its own, detached from the pool: the lock lives and dies with it.
        let mut connection = pool.acquire().await?.detach();
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut connection)
            .await?;
        if taken {
            Ok(Some(Self { connection }))
        } else {
            let _ = connection.close().await;
            Ok(None)
        }
    }

    /// Whether the lease's connection still answers (else PostgreSQL has released the lock).
    pub async fn still_held(&mut self) -> bool {
        self.connection.ping().await.is_ok()
    }

    /// Gives the lease up at once.
    pub async fn release(self) {
        let _ = self.connection.close().await;
    }
}

/// Runs the leader's loops until `shutdown`: tries to take the lease every `tick`; while held,
/// reconciles every `tick` and sweeps every `monitor_interval` (the first sweep one interval
/// after taking the lease).
pub async fn lead(manager: Manager, pool: PgPool, key: i64, shutdown: CancellationToken) {
    let tick = manager.settings().tick;
    loop {
        match Leadership::try_take(&pool, key).await {
            Ok(Some(leadership)) => {
                tracing::info!("monitor lease taken: this replica reconciles subscriptions");
                manager.metrics().monitor_leader.set(1);
                serve_as_leader(&manager, leadership, &shutdown).await;
                manager.metrics().monitor_leader.set(0);
                manager.metrics().forget_observations();
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "monitor lease cannot be taken");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(tick) => {}
        }
    }
}

async fn serve_as_leader(
    manager: &Manager,
    mut leadership: Leadership,
    shutdown: &CancellationToken,
) {
    let settings = manager.settings();
    let mut ticks = tokio::time::interval(settings.tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweeps = tokio::time::interval_at(
        tokio::time::Instant::now() + settings.monitor_interval,
        settings.monitor_interval,
    );
    sweeps.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticks.tick() => {
                if !leadership.still_held().await {
                    tracing::warn!("monitor lease lost");
                    return;
                }
                if let Err(error) = manager.reconcile().await {
                    tracing::warn!(error = %error_chain(&error), "reconciliation pass failed");
                }
            }
            _ = sweeps.tick() => {
                match manager.sweep().await {
                    Ok(report) => tracing::info!(?report, "monitor sweep done"),
                    Err(error) => tracing::warn!(error = %error_chain(&error), "monitor sweep failed"),
                }
            }
        }
    }
    leadership.release().await;
}
