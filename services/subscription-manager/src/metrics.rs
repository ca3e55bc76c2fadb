//! The subscription manager's Prometheus metrics. Label values that alerts compare are created
//! up front (every state, operation and outcome at 0), so a series exists before its first event.

use cardsync_store::subscription_slots::{Slot, SlotState};
use cardsync_telemetry::metrics::{
    IntCounterVec, IntGauge, IntGaugeVec, MetricsError, Opts, Registry, register,
};
use time::OffsetDateTime;
use uuid::Uuid;

/// Graph operations, by name.
pub const OPERATIONS: [&str; 3] = ["create", "renew", "delete"];
/// Their outcomes.
pub const OUTCOMES: [&str; 4] = ["ok", "failed", "quota_exceeded", "gone"];
/// Lifecycle events, by Graph's names (`other` for anything else).
pub const LIFECYCLE_EVENTS: [&str; 4] = [
    "reauthorizationRequired",
    "subscriptionRemoved",
    "missed",
    "other",
];

/// Typed handles to every metric the manager exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Slots by state.
    pub subscriptions: IntGaugeVec,
    /// Per tenant, seconds until its first active subscription expires.
    pub seconds_to_expiry: IntGaugeVec,
    /// Graph operations by operation and outcome.
    pub operations: IntCounterVec,
    /// Lifecycle events handled, by event and tenant.
    pub lifecycle: IntCounterVec,
    /// Subscriptions of cardsync's that Graph had and the registry did not, deleted.
    pub orphans_deleted: IntCounterVec,
    /// 1 while this replica holds the monitor lease.
    pub monitor_leader: IntGauge,
}

impl Metrics {
    /// Registers every metric on `registry`, with their label values at 0.
    pub fn register(registry: &Registry) -> Result<Self, MetricsError> {
        let metrics = Self {
            subscriptions: register(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "cardsync_subscription_manager_subscriptions",
                        "Subscription slots by state",
                    ),
                    &["state"],
                )?,
            )?,
            seconds_to_expiry: register(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "cardsync_subscription_manager_seconds_to_expiry",
                        "Seconds until a tenant's first active subscription expires",
                    ),
                    &["tenant"],
                )?,
            )?,
            operations: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "cardsync_subscription_manager_operations_total",
                        "Graph subscription operations by outcome",
                    ),
                    &["operation", "outcome"],
                )?,
            )?,
            lifecycle: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "cardsync_subscription_manager_lifecycle_events_total",
                        "Lifecycle notifications handled, by event and tenant",
                    ),
                    &["event", "tenant"],
                )?,
            )?,
            orphans_deleted: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "cardsync_subscription_manager_orphans_deleted_total",
                        "Subscriptions of cardsync's unknown to the registry, deleted in Graph",
                    ),
                    &["tenant"],
                )?,
            )?,
            monitor_leader: register(
                registry,
                IntGauge::new(
                    "cardsync_subscription_manager_monitor_leader",
                    "1 while this replica runs the reconciliation loops",
                )?,
            )?,
        };
        for state in SlotState::ALL {
            metrics.subscriptions.with_label_values(&[state.as_str()]);
        }
        for operation in OPERATIONS {
            for outcome in OUTCOMES {
                metrics.operations.with_label_values(&[operation, outcome]);
            }
        }
        Ok(metrics)
    }

    /// Counts one Graph operation.
    pub fn operation(&self, operation: &str, outcome: &str) {
        self.operations
            .with_label_values(&[operation, outcome])
            .inc();
    }

    /// Creates a tenant's per-tenant series at 0, once it is known.
    pub fn know_tenant(&self, tenant: Uuid) {
        let tenant = tenant.to_string();
        for event in LIFECYCLE_EVENTS {
            self.lifecycle.with_label_values(&[event, &tenant]);
        }
        self.orphans_deleted.with_label_values(&[&tenant]);
    }

    /// Drops what [`Metrics::observe`] set, when this replica stops being the one that observes
    /// (a follower's frozen figures would otherwise mislead alerts that take the minimum).
    pub fn forget_observations(&self) {
        for state in SlotState::ALL {
            self.subscriptions
                .with_label_values(&[state.as_str()])
                .set(0);
        }
        self.seconds_to_expiry.reset();
    }

    /// Sets the gauges from every slot: counts by state, and per tenant the time left on its
    /// active subscription that expires first. Tenants without slots lose their series.
    pub fn observe(&self, slots: &[Slot], now: OffsetDateTime) {
        for state in SlotState::ALL {
            let count = slots.iter().filter(|s| s.state == state).count();
            self.subscriptions
                .with_label_values(&[state.as_str()])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        let mut first: std::collections::BTreeMap<Uuid, i64> = std::collections::BTreeMap::new();
        for slot in slots {
            let left = slot
                .expires_at
                .filter(|_| slot.subscription_id.is_some())
                .map_or(0, |at| (at - now).whole_seconds().max(0));
            first
                .entry(slot.tenant_id)
                .and_modify(|v| *v = (*v).min(left))
                .or_insert(left);
        }
        self.seconds_to_expiry.reset();
        for (tenant, left) in first {
            self.seconds_to_expiry
                .with_label_values(&[&tenant.to_string()])
                .set(left);
        }
    }
}
