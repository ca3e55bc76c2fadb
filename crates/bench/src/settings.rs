//! The bus settings a service under test runs with, read as the service reads them: its
//! embedded defaults under the benchmark's `CARDSYNC__…` settings, through the one loader. The
//! benchmark's own publisher and topology then match the child's (the retry tiers name the
//! topology's queues), without the benchmark linking the service.

use cardsync_bus::{BusSettings, TopologySettings};
use cardsync_config::{ConfigError, Sources, Validate};
use serde::Deserialize;

/// The sections of a service's settings a benchmark shares with it.
#[derive(Debug, Deserialize)]
struct Shared {
    bus: BusSettings,
    #[serde(default)]
    topology: TopologySettings,
}

impl Validate for Shared {
    fn validate(&self, problems: &mut Vec<String>) {
        self.bus.validate(problems);
        self.topology.validate(problems);
    }
}

/// The `bus` settings of the service whose embedded defaults (its `config/default.toml`) are
/// `defaults`, with the settings `env` the benchmark starts it with; the `bus` and `topology`
/// sections are validated as the service validates them.
pub fn service_bus_settings(
    defaults: &str,
    env: &[(String, String)],
) -> Result<BusSettings, ConfigError> {
    let shared: Shared = cardsync_config::load(
        defaults,
        &Sources {
            file: None,
            env: Some(env.to_vec()),
        },
    )?;
    Ok(shared.bus)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const DEFAULTS: &str = r#"
        [http]
        listen = "127.0.0.1:8082"
        [bus]
        url = "amqp://guest:guest@127.0.0.1:5672/%2f"
        confirm_timeout = "2s"
        connect_timeout = "1s"
        [topology]
        prefix = ""
    "#;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn the_benchmarks_settings_override_the_services_defaults() {
        let bus = service_bus_settings(DEFAULTS, &env(&[("CARDSYNC__BUS__CONFIRM_TIMEOUT", "5s")]))
            .expect("valid settings");
        assert_eq!(bus.confirm_timeout, Duration::from_secs(5));
        assert_eq!(bus.connect_timeout, Duration::from_secs(1));
    }

    #[test]
    fn an_invalid_bus_setting_is_refused_before_the_service_starts() {
        let error =
            service_bus_settings(DEFAULTS, &env(&[("CARDSYNC__BUS__URL", "http://not-amqp")]))
                .expect_err("an http URL is no broker");
        assert!(error.to_string().contains("bus.url"), "{error}");
    }

    #[test]
    fn the_card_writer_and_webhook_defaults_load() {
        for defaults in [
            include_str!("../../../services/card-writer/config/default.toml"),
            include_str!("../../../services/webhook/config/default.toml"),
        ] {
            service_bus_settings(defaults, &[]).expect("the service's defaults are valid");
        }
    }
}
