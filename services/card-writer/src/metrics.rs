//! The card-writer's Prometheus metrics, registered on the process registry and passed in state.

use cardsync_telemetry::metrics::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, LATENCY_BUCKETS,
    MetricsError, Opts, Registry, register,
};
use prometheus::Gauge;

/// Buckets of the freshness SLO (seconds): fine below the 10 s objective, coarse up to an hour.
pub const FRESHNESS_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0,
];

/// Typed handles to every metric the card-writer exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Card commands by queue (`live`, `bulk`), outcome and tenant. Outcomes: `created`,
    /// `updated`, `linked`, `unchanged`, `deactivated`, `reactivated`, `deleted`, `tombstoned`,
    /// `stale`, `duplicate` (PostgreSQL's version check), `duplicate_fast` (Redis fast path),
    /// `invalid`, `failed`.
    pub commands: IntCounterVec,
    /// Time to apply one command (transaction included), by queue.
    pub apply_duration: HistogramVec,
    /// From the directory change being observed to the card commit, by queue.
    pub end_to_end: HistogramVec,
    /// The freshness SLO's measure: from the arrival of the earliest notification a command's
    /// round served to the card commit, by tenant (no per-user label).
    pub freshness: HistogramVec,
    /// Card events published from the outbox.
    pub outbox_published: IntCounter,
    /// Outbox batches the broker did not confirm (they are published again).
    pub outbox_publish_failures: IntCounter,
    /// Unpublished outbox rows at the last look.
    pub outbox_pending: IntGauge,
    /// Age in seconds of the oldest unpublished outbox row at the last look (0 when none).
    pub outbox_lag_seconds: Gauge,
    /// Redis dedup fast-path failures (the command is applied anyway; PostgreSQL guards).
    pub dedup_errors: IntCounter,
}

impl Metrics {
    /// Registers every metric on `registry`.
    pub fn register(registry: &Registry) -> Result<Self, MetricsError> {
        let latency = |name: &str, help: &str| {
            HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec())
        };
        Ok(Self {
            commands: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "cardsync_card_writer_commands_total",
                        "Card commands by queue, outcome and tenant",
                    ),
                    &["queue", "outcome", "tenant"],
                )?,
            )?,
            apply_duration: register(
                registry,
                HistogramVec::new(
                    latency(
                        "cardsync_card_writer_apply_duration_seconds",
                        "Time to apply one card command",
                    ),
                    &["queue"],
                )?,
            )?,
            end_to_end: register(
                registry,
                HistogramVec::new(
                    latency(
                        "cardsync_card_writer_end_to_end_seconds",
                        "From the directory change being observed to the card commit",
                    ),
                    &["queue"],
                )?,
            )?,
            freshness: register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "cardsync_card_writer_freshness_seconds",
                        "From the notification's arrival at the webhook to the card commit",
                    )
                    .buckets(FRESHNESS_BUCKETS.to_vec()),
                    &["tenant"],
                )?,
            )?,
            outbox_published: register(
                registry,
                IntCounter::new(
                    "cardsync_card_writer_outbox_published_total",
                    "Card events published from the outbox",
                )?,
            )?,
            outbox_publish_failures: register(
                registry,
                IntCounter::new(
                    "cardsync_card_writer_outbox_publish_failures_total",
                    "Outbox batches the broker did not confirm",
                )?,
            )?,
            outbox_pending: register(
                registry,
                IntGauge::new(
                    "cardsync_card_writer_outbox_pending",
                    "Unpublished outbox rows",
                )?,
            )?,
            outbox_lag_seconds: register(
                registry,
                Gauge::new(
                    "cardsync_card_writer_outbox_lag_seconds",
                    "Age of the oldest unpublished outbox row",
                )?,
            )?,
            dedup_errors: register(
                registry,
                IntCounter::new(
                    "cardsync_card_writer_dedup_errors_total",
                    "Redis dedup fast-path failures",
                )?,
            )?,
        })
    }
}
