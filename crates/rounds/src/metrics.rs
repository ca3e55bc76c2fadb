//! The Prometheus metrics of delta rounds (`cardsync_delta_*`), registered once per process.

use crate::drift::Drift;
use cardsync_telemetry::metrics::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, MetricsError, Opts,
    Registry, register,
};

/// Typed handles to every metric a round records.
#[derive(Debug, Clone)]
pub struct RoundMetrics {
    /// Rounds by cause and outcome.
    pub(crate) rounds: IntCounterVec,
    /// Round duration by cause.
    pub(crate) round_duration: HistogramVec,
    /// Card commands published, by action.
    pub(crate) commands: IntCounterVec,
    /// Changes found that no notification announced, by tenant (safety net at work).
    pub(crate) unannounced: IntCounterVec,
    /// Full re-enumerations forced by an expired token or Graph's resync request.
    pub(crate) resyncs: IntCounter,
    /// Users the tenant's rules cannot map (e.g. empty UID).
    pub(crate) unmappable: IntCounter,
    /// Rounds that enumerated the users delta from scratch (no stored link, or a forced resync).
    pub(crate) full_rounds: IntCounter,
    /// Cards a reconcile found drifted from the snapshot, by how (missing, status, fields).
    pub(crate) drift: IntCounterVec,
    /// Rounds the mass-change safety rail held.
    pub(crate) held: IntCounter,
    /// Held runs waiting for an admin, by tenant.
    pub(crate) held_runs: IntGaugeVec,
    /// 1 while the tenant is paused by the safety rail, by tenant.
    pub(crate) paused: IntGaugeVec,
}

impl RoundMetrics {
    /// Registers every metric on `registry`.
    pub fn register(registry: &Registry) -> Result<Self, MetricsError> {
        let metrics = Self {
            rounds: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "cardsync_delta_rounds_total",
                        "Delta rounds by cause and outcome",
                    ),
                    &["cause", "outcome"],
                )?,
            )?,
            round_duration: register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "cardsync_delta_round_duration_seconds",
                        "Delta round duration",
                    )
                    .buckets(vec![
                        0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                    ]),
                    &["cause"],
                )?,
            )?,
            commands: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "cardsync_delta_card_commands_total",
                        "Card commands published",
                    ),
                    &["action"],
                )?,
            )?,
            unannounced: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "cardsync_delta_unannounced_changes_total",
                        "Changes found that no notification announced",
                    ),
                    &["tenant"],
                )?,
            )?,
            resyncs: register(
                registry,
                IntCounter::new(
                    "cardsync_delta_resyncs_total",
                    "Full re-enumerations forced by Graph",
                )?,
            )?,
            unmappable: register(
                registry,
                IntCounter::new(
                    "cardsync_delta_unmappable_users_total",
                    "Users the rules cannot map",
                )?,
            )?,
            full_rounds: register(
                registry,
                IntCounter::new(
                    "cardsync_delta_full_rounds_total",
                    "Rounds that enumerated every user (initial, lost delta link, expired token)",
                )?,
            )?,
            drift: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "cardsync_delta_card_drift_total",
                        "Cards a reconcile found drifted from the directory and repaired",
                    ),
                    &["drift"],
                )?,
            )?,
            held: register(
                registry,
                IntCounter::new(
                    "cardsync_delta_rounds_held_total",
                    "Rounds the mass-change safety rail held for an admin",
                )?,
            )?,
            held_runs: register(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "cardsync_delta_held_runs",
                        "Runs held by the mass-change safety rail, waiting for an admin",
                    ),
                    &["tenant"],
                )?,
            )?,
            paused: register(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "cardsync_delta_tenant_paused",
                        "1 while the tenant is paused by the mass-change safety rail",
                    ),
                    &["tenant"],
                )?,
            )?,
        };
        // Every kind of drift from the start, so a scrape (and the dashboards) show zeros
        // before the first reconcile that finds any.
        for drift in [Drift::Missing, Drift::Status, Drift::Fields] {
            metrics.drift.with_label_values(&[drift.as_str()]);
        }
        Ok(metrics)
    }

    /// Creates `tenant`'s safety-rail gauges at zero if they do not exist yet (never changes
    /// a value).
    pub(crate) fn touch_rail(&self, tenant: &str) {
        self.held_runs.with_label_values(&[tenant]);
        self.paused.with_label_values(&[tenant]);
    }

    /// Sets the safety-rail gauges from `overview` (every tenant, zeros included, from
    /// [`cardsync_store::safety::overview`]).
    pub fn set_rail(&self, overview: &[(uuid::Uuid, i64, bool)]) {
        for (tenant, held, paused) in overview {
            let tenant = tenant.to_string();
            self.held_runs.with_label_values(&[&tenant]).set(*held);
            self.paused
                .with_label_values(&[&tenant])
                .set(i64::from(*paused));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_drift_is_exported_at_zero_before_any_reconcile() {
        let registry = Registry::new();
        RoundMetrics::register(&registry).expect("registered");
        let scrape = cardsync_telemetry::metrics::render(&registry);
        for drift in ["missing", "status", "fields"] {
            assert!(
                scrape.contains(&format!(
                    "cardsync_delta_card_drift_total{{drift=\"{drift}\"}} 0"
                )),
                "{drift} missing from:\n{scrape}"
            );
        }
    }
}
