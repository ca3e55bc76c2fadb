//! The reconciler's settings, loaded through the shared loader over `config/default.toml`.

use cardsync_bus::{BusSettings, TopologySettings};
use cardsync_config::{HttpSettings, PostgresSettings, RedisSettings, TelemetrySettings, Validate};
use cardsync_graph::GraphSettings;
use cardsync_photos::PhotoSettings;
use cardsync_rounds::RoundSettings;
pub use cardsync_store::sealing::SecretsSettings;
use serde::Deserialize;
use std::time::Duration;

/// Embedded defaults.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

/// Everything the reconciler needs.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// Health and metrics listener.
    pub http: HttpSettings,
    /// The rounds a reconcile runs (lease, photo budget, publish batch), as the delta-worker's.
    pub worker: RoundSettings,
    /// Runs: heartbeat, takeover and clean-up.
    pub reconciler: ReconcilerSettings,
    /// RabbitMQ.
    pub bus: BusSettings,
    /// Exchange and queue naming.
    pub topology: TopologySettings,
    /// PostgreSQL.
    pub postgres: PostgresSettings,
    /// Redis.
    pub redis: RedisSettings,
    /// Graph.
    pub graph: GraphSettings,
    /// Secrets.
    pub secrets: SecretsSettings,
    /// Logs and traces.
    pub telemetry: TelemetrySettings,
    /// Photo images: where they are stored and the size downloaded.
    pub photos: PhotoSettings,
}

/// The `[reconciler]` section: how a run proves it is alive, and what happens when it is not.
#[derive(Debug, Clone, Deserialize)]
pub struct ReconcilerSettings {
    /// How often a running run's heartbeat is renewed.
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub heartbeat: Duration,
    /// A running run whose heartbeat is older than this is taken over by its redelivered
    /// request (its reconciler was killed).
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub stale_after: Duration,
    /// `reconciler due` fails a started run whose heartbeat is older than this.
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub abandon_after: Duration,
    /// `reconciler due` publishes again a run queued this long and never started.
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub requeue_after: Duration,
    /// `reconciler due` fails a run whose commands went out this long ago and are still not
    /// all applied (a command dead-lettered is not counted yet, so such a run ends here).
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub settle_within: Duration,
    /// `reconciler due` deletes runs (of every kind) that ended this long ago.
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub retention: Duration,
}

impl Validate for Settings {
    fn validate(&self, problems: &mut Vec<String>) {
        self.http.validate(problems);
        self.bus.validate(problems);
        self.topology.validate(problems);
        self.postgres.validate(problems);
        self.redis.validate(problems);
        self.graph.validate(problems);
        self.telemetry.validate(problems);
        self.photos.validate(problems);
        self.worker.validate(problems);
        let runs = &self.reconciler;
        if runs.heartbeat.is_zero() {
            problems.push("reconciler.heartbeat: must be greater than 0".into());
        }
        if runs.stale_after < runs.heartbeat * 2 {
            problems
                .push("reconciler.stale_after: must be at least twice reconciler.heartbeat".into());
        }
        if runs.abandon_after < runs.stale_after {
            problems
                .push("reconciler.abandon_after: must be at least reconciler.stale_after".into());
        }
        if runs.requeue_after.is_zero() || runs.settle_within.is_zero() {
            problems.push(
                "reconciler.requeue_after and reconciler.settle_within: must be greater than 0"
                    .into(),
            );
        }
        if runs.retention < Duration::from_secs(24 * 3600) {
            problems.push("reconciler.retention: must be at least a day".into());
        }
        self.secrets.validate(problems);
    }
}

cardsync_runtime::service_settings!(Settings, DEFAULTS, "reconciler");

#[cfg(test)]
mod tests {
    use super::*;
    use cardsync_config::Sources;

    #[test]
    fn a_heartbeat_slower_than_the_takeover_is_refused() {
        let error = Settings::load(&Sources {
            file: None,
            env: Some(vec![
                ("CARDSYNC__RECONCILER__HEARTBEAT".into(), "1m".into()),
                ("CARDSYNC__RECONCILER__STALE_AFTER".into(), "30s".into()),
            ]),
        })
        .unwrap_err();
        assert!(
            error.to_string().contains("reconciler.stale_after"),
            "{error}"
        );
    }
}
