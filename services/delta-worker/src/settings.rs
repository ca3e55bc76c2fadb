//! The delta-worker's settings, loaded through the shared loader over `config/default.toml`.

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

/// Everything the delta-worker needs.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// Health and metrics listener.
    pub http: HttpSettings,
    /// Round behaviour.
    pub worker: WorkerSettings,
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

/// The `[worker]` section: how rounds behave, and when idle tenants get one.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkerSettings {
    /// Lease, the photo and role checks' cadence and budget, publish batch (`lease_ttl`,
    /// `lease_wait`, `photo_check_*`, `roles_check_interval`, `emit_batch`).
    #[serde(flatten)]
    pub rounds: RoundSettings,
    /// A tenant without a round for this long gets one (Graph never reports lost notifications).
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub safety_poll_interval: Duration,
    /// How often idle tenants are looked for.
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub safety_poll_tick: Duration,
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
        self.worker.rounds.validate(problems);
        if self.worker.safety_poll_interval.is_zero() || self.worker.safety_poll_tick.is_zero() {
            problems.push(
                "worker.safety_poll_interval and worker.safety_poll_tick: must be greater than 0"
                    .into(),
            );
        }
        self.secrets.validate(problems);
    }
}

cardsync_runtime::service_settings!(Settings, DEFAULTS, "delta-worker");

#[cfg(test)]
mod tests {
    use super::*;
    use cardsync_config::Sources;

    #[test]
    fn a_topology_prefix_with_a_space_is_refused() {
        let error = Settings::load(&Sources {
            file: None,
            env: Some(vec![(
                "CARDSYNC__TOPOLOGY__PREFIX".into(),
                "bad prefix".into(),
            )]),
        })
        .unwrap_err();
        assert!(error.to_string().contains("topology.prefix"), "{error}");
    }

    #[test]
    fn the_round_keys_of_the_worker_section_take_environment_overrides() {
        let settings = Settings::load(&Sources::development_with(&[
            ("CARDSYNC__WORKER__LEASE_TTL", "7s"),
            ("CARDSYNC__WORKER__EMIT_BATCH", "25"),
        ]))
        .unwrap();
        assert_eq!(settings.worker.rounds.lease_ttl, Duration::from_secs(7));
        assert_eq!(settings.worker.rounds.emit_batch, 25);
        let error = Settings::load(&Sources {
            file: None,
            env: Some(vec![("CARDSYNC__WORKER__EMIT_BATCH".into(), "0".into())]),
        })
        .unwrap_err();
        assert!(error.to_string().contains("worker.emit_batch"), "{error}");
    }
}
