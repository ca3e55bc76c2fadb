//! The webhook's own Prometheus metrics (the HTTP ones are the kit's), registered on the
//! process registry and passed in state.

use cardsync_telemetry::metrics::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, LATENCY_BUCKETS, MetricsError, Opts,
    Registry, register,
};

/// Typed handles to every metric the webhook exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Notifications published, by kind (`change`, `lifecycle`) and tenant.
    pub accepted: IntCounterVec,
    /// Notifications dropped, by reason.
    pub rejected: IntCounterVec,
    /// Time from first publish to the last broker confirm of a request's batch, by outcome.
    pub publish_confirm: HistogramVec,
    /// Registry look-ups by result (`found`, `pending`, `unknown`, `unverifiable`).
    pub registry_lookups: IntCounterVec,
    /// When the last notification of each tenant was accepted (confirmed by the broker), as a
    /// Unix time, so an alert computes its age. Silence alone proves nothing (a quiet tenant
    /// sends nothing); next to a subscription's state it tells a dead path from a quiet one.
    pub last_accepted: IntGaugeVec,
}

impl Metrics {
    /// Registers every metric on `registry`.
    pub fn register(registry: &Registry) -> Result<Self, MetricsError> {
        let latency = |name: &str, help: &str| {
            HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec())
        };
        let metrics = Self {
            accepted: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "cardsync_webhook_notifications_accepted_total",
                        "Notifications published to the bus",
                    ),
                    &["kind", "tenant"],
                )?,
            )?,
            rejected: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "cardsync_webhook_notifications_rejected_total",
                        "Notifications dropped, by reason",
                    ),
                    &["reason"],
                )?,
            )?,
            publish_confirm: register(
                registry,
                HistogramVec::new(
                    latency(
                        "cardsync_webhook_publish_confirm_duration_seconds",
                        "Publish until every confirm of a request",
                    ),
                    &["outcome"],
                )?,
            )?,
            registry_lookups: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "cardsync_webhook_registry_lookups_total",
                        "Subscription registry look-ups by result",
                    ),
                    &["result"],
                )?,
            )?,
            last_accepted: register(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "cardsync_webhook_last_accepted_notification_timestamp_seconds",
                        "Unix time of the last accepted notification, per tenant",
                    ),
                    &["tenant"],
                )?,
            )?,
        };
        // Every reason from the start, so a scrape (and an alert on a ratio) sees zeros.
        for rejection in crate::intake::Rejection::ALL {
            metrics.rejected.with_label_values(&[rejection.as_str()]);
        }
        Ok(metrics)
    }
}
