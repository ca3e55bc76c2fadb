//! The admin-api's settings, loaded through the shared loader over `config/default.toml`.

use cardsync_auth::AuthSettings;
use cardsync_bus::{BusSettings, TopologySettings};
use cardsync_config::{HttpSettings, PostgresSettings, RedisSettings, TelemetrySettings, Validate};
use cardsync_graph::GraphSettings;
pub use cardsync_store::sealing::SecretsSettings;
use serde::Deserialize;
use std::time::Duration;

/// Embedded defaults.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

/// Everything the admin-api needs to run.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// HTTP listener.
    pub http: HttpSettings,
    /// Who may call, and with which role.
    pub auth: AuthSettings,
    /// Limits of the API itself.
    pub admin: AdminSettings,
    /// RabbitMQ (sync requests, dead letters).
    pub bus: BusSettings,
    /// Exchange and queue naming.
    pub topology: TopologySettings,
    /// PostgreSQL (configuration, cards, runs).
    pub postgres: PostgresSettings,
    /// Redis, where offboarding deletes the tenant's keys (delta links, leases, dedup marks);
    /// `key_prefix` is what every service's key prefix starts with.
    pub redis: RedisSettings,
    /// Microsoft Graph (connection tests, group search).
    pub graph: GraphSettings,
    /// The key that seals Graph credentials.
    pub secrets: SecretsSettings,
    /// The photo store the rounds write images to (`url`; the API only reads it).
    pub photos: cardsync_photos::PhotoSettings,
    /// Logs and traces.
    pub telemetry: TelemetrySettings,
}

/// The `[admin]` section.
#[derive(Debug, Clone, Deserialize)]
pub struct AdminSettings {
    /// The most items one list page returns.
    pub page_size_max: u32,
    /// How long a connection test may take.
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub connection_test_timeout: Duration,
}

impl Validate for Settings {
    fn validate(&self, problems: &mut Vec<String>) {
        self.http.validate(problems);
        self.auth.validate(problems);
        self.bus.validate(problems);
        self.topology.validate(problems);
        self.postgres.validate(problems);
        self.redis.validate(problems);
        self.graph.validate(problems);
        self.telemetry.validate(problems);
        if !(1..=10_000).contains(&self.admin.page_size_max) {
            problems.push("admin.page_size_max: 1 to 10000".into());
        }
        if self.admin.connection_test_timeout.is_zero() {
            problems.push("admin.connection_test_timeout: must be greater than 0".into());
        }
        self.secrets.validate(problems);
        self.photos.validate(problems);
    }
}

cardsync_runtime::service_settings!(Settings, DEFAULTS, "admin-api");

#[cfg(test)]
mod tests {
    use super::*;
    use cardsync_config::Sources;

    fn load(env: &[(&str, &str)]) -> Result<Settings, cardsync_config::ConfigError> {
        Settings::load(&Sources::development_with(env))
    }

    #[test]
    fn hs256_is_off_by_default_and_needs_a_long_secret_when_on() {
        let settings = load(&[]).unwrap();
        assert!(!settings.auth.allow_hs256);
        let error = load(&[("CARDSYNC__AUTH__ALLOW_HS256", "true")]).unwrap_err();
        assert!(error.to_string().contains("auth.hs256_secret"), "{error}");
    }

    #[test]
    fn no_issuer_or_audience_is_refused() {
        let error = load(&[
            ("CARDSYNC__AUTH__ISSUERS", "[]"),
            ("CARDSYNC__AUTH__AUDIENCES", "[]"),
        ])
        .unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("auth.issuers") && text.contains("auth.audiences"),
            "{text}"
        );
    }
}
