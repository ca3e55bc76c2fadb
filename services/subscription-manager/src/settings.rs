//! The subscription manager's settings, loaded through the shared loader over `config/default.toml`.

use cardsync_bus::{BusSettings, TopologySettings};
use cardsync_config::{HttpSettings, PostgresSettings, TelemetrySettings, Validate};
use cardsync_graph::GraphSettings;
pub use cardsync_store::sealing::SecretsSettings;
use serde::Deserialize;
use std::time::Duration;
use url::Url;

/// Embedded defaults.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

/// The webhook's paths under the public base URL (services/webhook).
const NOTIFICATIONS_PATH: &str = "/graph/notifications";
const LIFECYCLE_PATH: &str = "/graph/lifecycle";

/// Graph's ceiling for user and group subscriptions (graph-facts §4).
const MAX_LIFETIME: Duration = Duration::from_secs(41_760 * 60);

/// Everything the subscription manager needs.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// Health and metrics listener.
    pub http: HttpSettings,
    /// How subscriptions are kept.
    pub subscriptions: ManagerSettings,
    /// RabbitMQ (lifecycle events in, catch-up sync requests out).
    pub bus: BusSettings,
    /// Exchange and queue naming.
    pub topology: TopologySettings,
    /// PostgreSQL.
    pub postgres: PostgresSettings,
    /// Graph.
    pub graph: GraphSettings,
    /// Secrets.
    pub secrets: SecretsSettings,
    /// Logs and traces.
    pub telemetry: TelemetrySettings,
}

/// The `[subscriptions]` section.
#[derive(Debug, Clone, Deserialize)]
pub struct ManagerSettings {
    /// The webhook's public base URL.
    pub public_base_url: Url,
    /// Requested lifetime of a subscription.
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub lifetime: Duration,
    /// Renew a subscription once it is this old.
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub renew_after: Duration,
    /// Up to this much earlier, at random, to spread renewals.
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub renew_jitter: Duration,
    /// First wait after a failure; doubles per consecutive failure.
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub retry_base: Duration,
    /// Longest wait after a failure.
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub retry_cap: Duration,
    /// Wait after Graph's subscription quota refused a create.
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub quota_retry: Duration,
    /// Lifetime of a create's pending registration.
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub pending_ttl: Duration,
    /// How often connected tenants are compared with the registry.
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub tick: Duration,
    /// How often Graph's lists are compared with the registry.
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub monitor_interval: Duration,
    /// Graph list calls per second during a monitor sweep.
    pub monitor_lists_per_second: u32,
    /// Graph calls at once.
    pub concurrency: usize,
}

impl ManagerSettings {
    /// Where Graph sends change notifications.
    pub fn notification_url(&self) -> String {
        self.url_of(NOTIFICATIONS_PATH)
    }

    /// Where Graph sends lifecycle notifications.
    pub fn lifecycle_url(&self) -> String {
        self.url_of(LIFECYCLE_PATH)
    }

    fn url_of(&self, path: &str) -> String {
        format!(
            "{}{path}",
            self.public_base_url.as_str().trim_end_matches('/')
        )
    }
}

impl Validate for ManagerSettings {
    fn validate(&self, problems: &mut Vec<String>) {
        if !matches!(self.public_base_url.scheme(), "https" | "http") {
            problems.push("subscriptions.public_base_url: must be an http(s) URL".into());
        }
        if self.lifetime < Duration::from_secs(45 * 60) || self.lifetime > MAX_LIFETIME {
            problems.push(
                "subscriptions.lifetime: must be between 45m and 41760m (Graph's limits)".into(),
            );
        }
        if self.renew_after.is_zero() || self.renew_after + self.retry_cap >= self.lifetime {
            problems.push(
                "subscriptions.renew_after: must be greater than 0 and leave more than retry_cap before the lifetime ends"
                    .into(),
            );
        }
        if self.renew_jitter >= self.renew_after {
            problems.push("subscriptions.renew_jitter: must be less than renew_after".into());
        }
        for (name, value) in [
            ("retry_base", self.retry_base),
            ("retry_cap", self.retry_cap),
            ("quota_retry", self.quota_retry),
            ("pending_ttl", self.pending_ttl),
            ("tick", self.tick),
            ("monitor_interval", self.monitor_interval),
        ] {
            if value.is_zero() {
                problems.push(format!("subscriptions.{name}: must be greater than 0"));
            }
        }
        if self.monitor_lists_per_second == 0 || self.concurrency == 0 {
            problems.push(
                "subscriptions.monitor_lists_per_second and subscriptions.concurrency: must be greater than 0"
                    .into(),
            );
        }
    }
}

impl Validate for Settings {
    fn validate(&self, problems: &mut Vec<String>) {
        self.http.validate(problems);
        self.subscriptions.validate(problems);
        self.bus.validate(problems);
        self.topology.validate(problems);
        self.postgres.validate(problems);
        self.graph.validate(problems);
        self.telemetry.validate(problems);
        self.secrets.validate(problems);
    }
}

cardsync_runtime::service_settings!(Settings, DEFAULTS, "subscription-manager");

#[cfg(test)]
mod tests {
    use super::*;
    use cardsync_config::Sources;

    fn load(env: &[(&str, &str)]) -> Result<Settings, cardsync_config::ConfigError> {
        Settings::load(&Sources::development_with(env))
    }

    #[test]
    fn the_webhook_urls_hang_under_the_public_base_url() {
        let settings = load(&[(
            "CARDSYNC__SUBSCRIPTIONS__PUBLIC_BASE_URL",
            "https://hooks.example.com/",
        )])
        .expect("valid");
        assert_eq!(
            settings.subscriptions.notification_url(),
            "https://hooks.example.com/graph/notifications"
        );
        assert_eq!(
            settings.subscriptions.lifecycle_url(),
            "https://hooks.example.com/graph/lifecycle"
        );
    }

    #[test]
    fn a_lifetime_past_graphs_maximum_or_a_renewal_after_it_is_refused() {
        let error = load(&[("CARDSYNC__SUBSCRIPTIONS__LIFETIME", "41761m")]).unwrap_err();
        assert!(
            error.to_string().contains("subscriptions.lifetime"),
            "{error}"
        );
        let error = load(&[("CARDSYNC__SUBSCRIPTIONS__RENEW_AFTER", "41690m")]).unwrap_err();
        assert!(
            error.to_string().contains("subscriptions.renew_after"),
            "{error}"
        );
    }
}
