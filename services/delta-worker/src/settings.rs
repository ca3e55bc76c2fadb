//! The delta-worker's settings, loaded through the shared loader over `config/default.toml`.

use cardsync_bus::{BusSettings, TopologySettings};
use cardsync_config::{HttpSettings, PostgresSettings, RedisSettings, TelemetrySettings, Validate};
use cardsync_graph::GraphSettings;
use secrecy::SecretString;
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
}

/// Round behaviour.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkerSettings {
    /// A tenant without a round for this long gets one (Graph never reports lost notifications).
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub safety_poll_interval: Duration,
    /// How often idle tenants are looked for.
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub safety_poll_tick: Duration,
    /// Lease lifetime (renewed every third of it while a round runs).
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub lease_ttl: Duration,
    /// Longest wait for another replica's round of the same tenant.
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub lease_wait: Duration,
    /// Photo metadata checks per round beyond newly created users (Graph budget).
    pub photo_checks_per_round: u32,
    /// Card commands per publish batch.
    pub emit_batch: u32,
}

/// Secrets.
#[derive(Debug, Clone, Deserialize)]
pub struct SecretsSettings {
    /// 32 bytes, base64: seals tenant credentials in PostgreSQL.
    pub credential_key: SecretString,
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
        if self.worker.lease_ttl < Duration::from_secs(3) {
            problems.push("worker.lease_ttl: must be at least 3s".into());
        }
        if self.worker.emit_batch == 0 {
            problems.push("worker.emit_batch: must be greater than 0".into());
        }
        if self.worker.safety_poll_interval.is_zero() || self.worker.safety_poll_tick.is_zero() {
            problems.push(
                "worker.safety_poll_interval and worker.safety_poll_tick: must be greater than 0"
                    .into(),
            );
        }
        if cardsync_store::connections::SealingKey::from_base64(&self.secrets.credential_key)
            .is_err()
        {
            problems.push("secrets.credential_key: must be 32 bytes, base64-encoded".into());
        }
    }
}

cardsync_runtime::service_settings!(Settings, DEFAULTS);

#[cfg(test)]
mod tests {
    use super::*;
    use cardsync_config::Sources;

    #[test]
    fn the_embedded_defaults_are_valid_and_use_the_delta_workers_port() {
        let settings = Settings::load(&Sources {
            file: None,
            env: Some(vec![]),
        })
        .unwrap();
        assert_eq!(
            Some(settings.http.listen.port()),
            cardsync_runtime::default_port("delta-worker")
        );
    }

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
}
