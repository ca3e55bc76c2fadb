//! The webhook's Prometheus metrics, registered on the process registry and passed in state.

use cardsync_telemetry::metrics::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, LATENCY_BUCKETS, MetricsError, Opts,
    Registry, register,
};

/// Typed handles to every metric the webhook exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// HTTP requests by route pattern and status code.
    pub http_requests: IntCounterVec,
    /// HTTP request latency by route pattern and status code.
    pub http_duration: HistogramVec,
    /// Requests being handled right now (shutdown waits for this to reach zero).
    pub http_in_flight: IntGauge,
    /// Notifications published, by kind (`change`, `lifecycle`) and tenant.
    pub accepted: IntCounterVec,
    /// Notifications dropped, by reason.
    pub rejected: IntCounterVec,
    /// Time from first publish to the last broker confirm of a request's batch, by outcome.
    pub publish_confirm: HistogramVec,
    /// Registry look-ups by result (`found`, `unknown`, `unverifiable`).
    pub registry_lookups: IntCounterVec,
}

impl Metrics {
    /// Registers every metric on `registry`.
    pub fn register(registry: &Registry) -> Result<Self, MetricsError> {
        let latency = |name: &str, help: &str| {
            HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec())
        };
        Ok(Self {
            http_requests: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "cardsync_webhook_http_requests_total",
                        "HTTP requests by route and status",
                    ),
                    &["route", "status"],
                )?,
            )?,
            http_duration: register(
                registry,
                HistogramVec::new(
                    latency(
                        "cardsync_webhook_http_request_duration_seconds",
                        "HTTP request latency",
                    ),
                    &["route", "status"],
                )?,
            )?,
            http_in_flight: register(
                registry,
                IntGauge::new(
                    "cardsync_webhook_http_requests_in_flight",
                    "HTTP requests being handled",
                )?,
            )?,
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
        })
    }
}
