//! Lifecycle notifications (graph-facts §5), consumed from `subscription-manager.lifecycle`:
//!
//! - `reauthorizationRequired`: renew at once with a PATCH, which also reauthorizes. Graph warns
//!   against sending a reauthorize and a PATCH for one subscription within 10 minutes; a PATCH
//!   alone does both, so cardsync never calls `/reauthorize`. Graph paused delivery until now,
//!   and what changed meanwhile is never notified: a catch-up round follows.
//! - `subscriptionRemoved`: create a new subscription, then a catch-up round.
//! - `missed`: a full round.
//!
//! Every event is counted by type and tenant.

use crate::manager::{Manager, ManagerError, Outcome};
use cardsync_bus::{Delivery, Handler, HandlerError};
use cardsync_proto as proto;
use cardsync_store::subscription_slots::{self as slots, SlotState};
use uuid::Uuid;

/// Handles `LifecycleEvent`s.
#[derive(Debug, Clone)]
pub struct LifecycleHandler {
    manager: Manager,
}

/// What a lifecycle event led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// The slot's outcome, and whether a catch-up round was asked for.
    Acted(Outcome, bool),
    /// A full round was asked for.
    FullRound,
    /// The subscription is no longer ours (retired or replaced): nothing to do.
    Stale,
    /// An event type cardsync does not act on.
    Ignored,
}

impl LifecycleHandler {
    /// A handler acting through `manager`.
    pub fn new(manager: Manager) -> Self {
        Self { manager }
    }

    /// Acts on one event of `tenant` about `subscription`.
    pub async fn act(
        &self,
        tenant: Uuid,
        subscription: Uuid,
        kind: proto::LifecycleKind,
    ) -> Result<Handled, ManagerError> {
        let event = match kind {
            proto::LifecycleKind::ReauthorizationRequired => "reauthorizationRequired",
            proto::LifecycleKind::SubscriptionRemoved => "subscriptionRemoved",
            proto::LifecycleKind::Missed => "missed",
            _ => "other",
        };
        self.manager
            .metrics()
            .lifecycle
            .with_label_values(&[event, &tenant.to_string()])
            .inc();
        let pool = self.manager.pool();
        let Some(slot) = slots::by_subscription(pool, subscription)
            .await?
            .filter(|slot| slot.tenant_id == tenant)
        else {
            // In the creation window the subscription exists before its row: try again later.
            let creating = slots::for_tenant(pool, tenant)
                .await?
                .iter()
                .any(|s| s.state == SlotState::Creating);
            return if creating {
                Err(ManagerError::NotYetRegistered)
            } else {
                tracing::info!(%tenant, %subscription, event, "lifecycle event for a subscription that is no longer ours");
                Ok(Handled::Stale)
            };
        };
        tracing::info!(%tenant, %subscription, event, "lifecycle event");
        use proto::sync_request::Depth;
        match kind {
            proto::LifecycleKind::ReauthorizationRequired => {
                let outcome = self.manager.renew(&slot).await?;
                if outcome == Outcome::Renewed {
                    slots::reauthorized(pool, tenant, &slot.resource, self.manager.clock().now())
                        .await?;
                }
                // A recreate already asked for its own catch-up.
                let catch_up = outcome != Outcome::Recreated;
                if catch_up {
                    self.manager.catch_up(tenant, Depth::Info).await?;
                }
                Ok(Handled::Acted(outcome, catch_up))
            }
            proto::LifecycleKind::SubscriptionRemoved => {
                let outcome = self
                    .manager
                    .recreate(
                        &slot,
                        subscription,
                        "Graph removed the subscription (subscriptionRemoved)",
                    )
                    .await?;
                Ok(Handled::Acted(outcome, outcome == Outcome::Recreated))
            }
            proto::LifecycleKind::Missed => {
                self.manager.catch_up(tenant, Depth::Full).await?;
                Ok(Handled::FullRound)
            }
            _ => Ok(Handled::Ignored),
        }
    }
}

impl Handler for LifecycleHandler {
    type Message = proto::LifecycleEvent;

    async fn handle(&self, delivery: Delivery<proto::LifecycleEvent>) -> Result<(), HandlerError> {
        let event = delivery.message;
        let tenant = event
            .envelope
            .as_ref()
            .and_then(|e| Uuid::parse_str(&e.tenant_id).ok())
            .ok_or_else(|| HandlerError::Permanent("the event names no valid tenant".into()))?;
        let subscription = Uuid::parse_str(&event.subscription_id).map_err(|_| {
            HandlerError::Permanent("the event names no valid subscription id".into())
        })?;
        self.act(tenant, subscription, event.kind()).await?;
        Ok(())
    }
}
