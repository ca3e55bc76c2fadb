//! The webhook's core, free of HTTP: verify each notification against the registry, publish
//! the accepted ones, and report whether every one of them was confirmed by the broker.

use crate::metrics::Metrics;
use crate::notification::{self, ChangeType, ItemProblem, LifecycleKind, Notification};
use crate::registry::{Lookup, Registry};
use cardsync_bus::{Outgoing, PublishError, Publisher, Topology, names, routing};
use cardsync_proto as proto;
use cardsync_store::subscriptions::ClientStateHash;
use cardsync_telemetry::LogBudget;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use uuid::Uuid;

/// Rejection log lines per second, whatever arrives: a request's rejections make one line, and a
/// flood of requests makes at most this many (the rest are counted in the next line).
const REJECTION_LINES_PER_SECOND: u32 = 5;

/// Why a notification was dropped. Each is counted; none is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The item was not a well-formed notification.
    Malformed,
    /// Its subscription id is not in the registry.
    UnknownSubscription,
    /// Its clientState differs from the registered one.
    ClientStateMismatch,
    /// Its tenant differs from the subscription's tenant.
    TenantMismatch,
}

impl Rejection {
    /// Every reason, in a fixed order.
    pub const ALL: [Rejection; 4] = [
        Rejection::Malformed,
        Rejection::UnknownSubscription,
        Rejection::ClientStateMismatch,
        Rejection::TenantMismatch,
    ];

    /// The rejection's stable name (metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Malformed => "malformed",
            Rejection::UnknownSubscription => "unknown_subscription",
            Rejection::ClientStateMismatch => "client_state_mismatch",
            Rejection::TenantMismatch => "tenant_mismatch",
        }
    }
}

/// What happened to a request's notifications.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Published and confirmed.
    pub accepted: usize,
    /// Dropped, with the reason of each.
    pub rejected: Vec<Rejection>,
}

/// Why nothing can be promised for the request; Graph must redeliver it.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// A subscription could not be checked against the registry right now.
    #[error("the subscription registry cannot be consulted")]
    RegistryUnavailable,
    /// The broker did not confirm every accepted notification.
    #[error("publishing to the broker failed")]
    Publish(#[from] PublishError),
}

/// Verifies and publishes notifications.
#[derive(Debug, Clone)]
pub struct Intake {
    registry: Arc<Registry>,
    publisher: Publisher,
    metrics: Metrics,
    exchange: String,
    log_budget: Arc<LogBudget>,
}

impl Intake {
    /// Publishes accepted notifications to `topology`'s Graph exchange.
    pub fn new(
        registry: Arc<Registry>,
        publisher: Publisher,
        metrics: Metrics,
        topology: &Topology,
    ) -> Self {
        Self {
            registry,
            publisher,
            metrics,
            exchange: topology.name(names::GRAPH),
            log_budget: Arc::new(LogBudget::new(
                REJECTION_LINES_PER_SECOND,
                Duration::from_secs(1),
            )),
        }
    }

    /// Verifies every item, publishes the accepted ones and waits for all their confirms.
    pub async fn accept(
        &self,
        items: Vec<Result<Notification, ItemProblem>>,
        received_at: OffsetDateTime,
    ) -> Result<Verdict, IntakeError> {
        let mut verdict = Verdict::default();
        let mut batch = Vec::with_capacity(items.len());
        let mut tenants = Vec::with_capacity(items.len());
        let mut subscriptions = Vec::with_capacity(items.len());
        let mut example: Option<(Uuid, Uuid)> = None;
        let mut first_problem: Option<ItemProblem> = None;
        for item in items {
            let notification = match item {
                Ok(notification) => notification,
                Err(problem) => {
                    first_problem.get_or_insert(problem);
                    verdict.rejected.push(Rejection::Malformed);
                    continue;
                }
            };
            match self.verify(&notification).await? {
                Ok(()) => {
                    tenants.push((notification.as_str(), notification.origin().tenant_id));
                    subscriptions.push(notification.origin().subscription_id);
                    batch.push(self.outgoing(&notification, received_at));
                }
                Err(rejection) => {
                    let origin = notification.origin();
                    example.get_or_insert((origin.subscription_id, origin.tenant_id));
                    verdict.rejected.push(rejection);
                }
            }
        }
        self.count_rejections(&verdict.rejected, example, first_problem);
        if batch.is_empty() {
            return Ok(verdict);
        }

        let started = std::time::Instant::now();
        let published = self.publisher.publish_all(batch).await;
        let outcome = if published.is_ok() {
            "confirmed"
        } else {
            "failed"
        };
        self.metrics
            .publish_confirm
            .with_label_values(&[outcome])
            .observe(started.elapsed().as_secs_f64());
        published?;

        verdict.accepted = tenants.len();
        self.registry.note_deliveries(&subscriptions, received_at);
        let accepted_at = received_at.unix_timestamp();
        for (kind, tenant) in tenants {
            let tenant = tenant.to_string();
            self.metrics
                .accepted
                .with_label_values(&[kind, &tenant])
                .inc();
            self.metrics
                .last_accepted
                .with_label_values(&[&tenant])
                .set(accepted_at);
        }
        Ok(verdict)
    }

    /// Counts every rejection and logs them in one line per request, within the log budget.
    /// Never the clientState: the ids of one example are what an operator needs to investigate.
    fn count_rejections(
        &self,
        rejected: &[Rejection],
        example: Option<(Uuid, Uuid)>,
        problem: Option<ItemProblem>,
    ) {
        if rejected.is_empty() {
            return;
        }
        let mut counts = [0usize; Rejection::ALL.len()];
        for rejection in rejected {
            if let Some(index) = Rejection::ALL.iter().position(|r| r == rejection) {
                counts[index] += 1;
            }
        }
        for (rejection, count) in Rejection::ALL.iter().zip(counts) {
            if count > 0 {
                self.metrics
                    .rejected
                    .with_label_values(&[rejection.as_str()])
                    .inc_by(count as u64);
            }
        }
        let Some(suppressed_lines) = self.log_budget.take() else {
            return;
        };
        let [
            malformed,
            unknown_subscription,
            client_state_mismatch,
            tenant_mismatch,
        ] = counts;
        tracing::warn!(
            rejected = rejected.len(),
            malformed,
            unknown_subscription,
            client_state_mismatch,
            tenant_mismatch,
            example_subscription_id = example.map(|(subscription, _)| subscription.to_string()),
            example_tenant_id = example.map(|(_, tenant)| tenant.to_string()),
            first_problem = problem.map(|problem| problem.to_string()),
            suppressed_lines,
            "notifications rejected"
        );
    }

    async fn verify(
        &self,
        notification: &Notification,
    ) -> Result<Result<(), Rejection>, IntakeError> {
        let origin = notification.origin();
        let presented =
            ClientStateHash::of(origin.client_state.as_ref().map_or("", |c| c.expose()));
        let lookup = self
            .registry
            .lookup(origin.subscription_id, origin.tenant_id, &presented)
            .await;
        let label = match &lookup {
            Lookup::Found(_) => "found",
            Lookup::Pending(_) => "pending",
            Lookup::Unknown => "unknown",
            Lookup::Unverifiable => "unverifiable",
        };
        self.metrics
            .registry_lookups
            .with_label_values(&[label])
            .inc();
        let subscription = match lookup {
            Lookup::Found(subscription) | Lookup::Pending(subscription) => subscription,
            Lookup::Unknown => return Ok(Err(Rejection::UnknownSubscription)),
            Lookup::Unverifiable => return Err(IntakeError::RegistryUnavailable),
        };
        if !subscription.client_state.matches(&presented) {
            return Ok(Err(Rejection::ClientStateMismatch));
        }
        if subscription.tenant_id != origin.tenant_id {
            return Ok(Err(Rejection::TenantMismatch));
        }
        Ok(Ok(()))
    }

    fn outgoing(&self, notification: &Notification, received_at: OffsetDateTime) -> Outgoing {
        let origin = notification.origin();
        let tenant = origin.tenant_id.to_string();
        let envelope = Some(proto::Envelope::new(
            tenant.clone(),
            match notification {
                Notification::Change(_) => proto::Cause::Notification,
                Notification::Lifecycle(_) => proto::Cause::Lifecycle,
            },
        ));
        let expires_at = origin.subscription_expires_at.map(proto::timestamp);
        let received_at = Some(proto::timestamp(received_at));
        match notification {
            Notification::Change(change) => {
                let message = proto::GraphChange {
                    envelope,
                    subscription_id: origin.subscription_id.to_string(),
                    change_type: match change.change_type {
                        ChangeType::Created => proto::ChangeType::Created,
                        ChangeType::Updated => proto::ChangeType::Updated,
                        ChangeType::Deleted => proto::ChangeType::Deleted,
                        ChangeType::Other => proto::ChangeType::Unspecified,
                    } as i32,
                    resource: change.resource.clone(),
                    resource_id: change.resource_id.clone().unwrap_or_default(),
                    resource_type: change.resource_type.clone().unwrap_or_default(),
                    subscription_expires_at: expires_at,
                    received_at,
                };
                Outgoing::new(&self.exchange, &routing::change(&tenant), &message)
            }
            Notification::Lifecycle(lifecycle) => {
                let message = proto::LifecycleEvent {
                    envelope,
                    subscription_id: origin.subscription_id.to_string(),
                    kind: match lifecycle.kind {
                        LifecycleKind::ReauthorizationRequired => {
                            proto::LifecycleKind::ReauthorizationRequired
                        }
                        LifecycleKind::SubscriptionRemoved => {
                            proto::LifecycleKind::SubscriptionRemoved
                        }
                        LifecycleKind::Missed => proto::LifecycleKind::Missed,
                        LifecycleKind::Other => proto::LifecycleKind::Unspecified,
                    } as i32,
                    subscription_expires_at: expires_at,
                    received_at,
                };
                Outgoing::new(&self.exchange, &routing::lifecycle(&tenant), &message)
            }
        }
    }
}

/// Parses a body; re-exported here so the HTTP layer has one entry point.
pub use notification::parse_batch;
