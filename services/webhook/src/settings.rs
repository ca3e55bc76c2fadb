//! The webhook's settings, loaded through the shared loader over `config/default.toml`.

use crate::registry::RegistrySettings;
use cardsync_bus::{BusSettings, TopologySettings};
use cardsync_config::{HttpSettings, PostgresSettings, TelemetrySettings, Validate};
use serde::Deserialize;
use std::time::Duration;

/// Embedded defaults.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

/// Everything the webhook needs to run.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// HTTP listener.
    pub http: HttpSettings,
    /// Webhook-specific behaviour.
    pub webhook: WebhookSettings,
    /// Subscription registry cache.
    pub registry: RegistrySettings,
    /// RabbitMQ.
    pub bus: BusSettings,
    /// Exchange and queue naming.
    pub topology: TopologySettings,
    /// PostgreSQL (the subscription registry).
    pub postgres: PostgresSettings,
    /// Logs and traces.
    pub telemetry: TelemetrySettings,
}

/// Webhook-specific behaviour.
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookSettings {
    /// Longest validation token answered; longer ones get `400`.
    pub validation_token_max_bytes: usize,
    /// `Retry-After` sent with `503`.
    pub retry_after_seconds: u32,
}

impl Validate for Settings {
    fn validate(&self, problems: &mut Vec<String>) {
        self.http.validate(problems);
        self.registry.validate(problems);
        self.bus.validate(problems);
        self.topology.validate(problems);
        self.postgres.validate(problems);
        self.telemetry.validate(problems);
        if self.webhook.validation_token_max_bytes == 0 {
            problems.push("webhook.validation_token_max_bytes: must be greater than 0".into());
        }
        if self.webhook.retry_after_seconds == 0 {
            problems.push("webhook.retry_after_seconds: must be greater than 0".into());
        }
        if self.bus.confirm_timeout >= Duration::from_millis(2500) {
            problems.push(
                "bus.confirm_timeout: must stay well under Graph's 3 s delivery window (< 2.5s)"
                    .into(),
            );
        }
    }
}

cardsync_runtime::service_settings!(Settings, DEFAULTS, "webhook");

#[cfg(test)]
mod tests {
    use super::*;
    use cardsync_config::Sources;

    #[test]
    fn the_embedded_defaults_are_valid() {
        let settings = Settings::load(&Sources::embedded_only()).unwrap();
        assert_eq!(settings.http.body_limit_bytes, 1024 * 1024);
        assert_eq!(settings.webhook.validation_token_max_bytes, 4096);
    }

    #[test]
    fn a_confirm_timeout_near_graphs_window_is_refused() {
        let sources = Sources {
            file: None,
            env: Some(vec![("CARDSYNC__BUS__CONFIRM_TIMEOUT".into(), "3s".into())]),
        };
        let error = Settings::load(&sources).unwrap_err();
        assert!(error.to_string().contains("bus.confirm_timeout"), "{error}");
    }
}
