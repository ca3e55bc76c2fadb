//! How a service talks to RabbitMQ: connection, confirms, prefetch, retries, reconnects, shutdown.

use cardsync_config::Validate;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// Settings shared by [`crate::Publisher`] and [`crate::Consumer`].
///
/// Every field but `url` has a default, so a service's embedded TOML only needs the URL.
/// Durations are written as strings (`"30s"`, `"250ms"`). `Debug` never shows the URL's password.
#[derive(Debug, Clone, Deserialize)]
pub struct BusSettings {
    /// `amqp://user:password@host:port/vhost`; secret because it holds the password.
    pub url: SecretString,
    /// Longest a publish (connecting included) may take before it counts as failed.
    #[serde(
        default = "defaults::confirm_timeout",
        deserialize_with = "cardsync_config::duration::deserialize"
    )]
    pub confirm_timeout: Duration,
    /// Longest one connection attempt (TCP + AMQP handshake + topology) may take.
    #[serde(
        default = "defaults::connect_timeout",
        deserialize_with = "cardsync_config::duration::deserialize"
    )]
    pub connect_timeout: Duration,
    /// Unacknowledged deliveries the broker may push to one consumer.
    #[serde(default = "defaults::prefetch")]
    pub prefetch: u16,
    /// Handlers running at once in one consumer.
    #[serde(default = "defaults::concurrency")]
    pub concurrency: usize,
    /// Deliveries of one message (first try included) before a transient failure dead-letters it.
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
    /// Wait before retry 1, 2, …; the last tier repeats. One delayed retry queue exists per tier.
    #[serde(
        default = "defaults::retry_delays",
        deserialize_with = "deserialize_durations"
    )]
    pub retry_delays: Vec<Duration>,
    /// Upper bound of the exponential backoff between reconnect attempts of a consumer.
    #[serde(
        default = "defaults::reconnect_max_backoff",
        deserialize_with = "cardsync_config::duration::deserialize"
    )]
    pub reconnect_max_backoff: Duration,
    /// Longest a consumer waits for in-flight handlers after shutdown was requested.
    #[serde(
        default = "defaults::drain_timeout",
        deserialize_with = "cardsync_config::duration::deserialize"
    )]
    pub drain_timeout: Duration,
    /// Confirm channels a publisher keeps open; each carries one batch at a time.
    #[serde(default = "defaults::publish_channels")]
    pub publish_channels: usize,
    /// `quorum` (production) or `classic` (local runs and test suites).
    #[serde(default)]
    pub queue_type: crate::QueueType,
}

mod defaults {
    use std::time::Duration;

    pub(super) fn confirm_timeout() -> Duration {
        Duration::from_secs(2)
    }
    pub(super) fn connect_timeout() -> Duration {
        Duration::from_secs(1)
    }
    pub(super) fn prefetch() -> u16 {
        32
    }
    pub(super) fn concurrency() -> usize {
        8
    }
    pub(super) fn max_attempts() -> u32 {
        8
    }
    pub(super) fn retry_delays() -> Vec<Duration> {
        [1, 5, 30, 120, 600]
            .into_iter()
            .map(Duration::from_secs)
            .collect()
    }
    pub(super) fn reconnect_max_backoff() -> Duration {
        Duration::from_secs(30)
    }
    pub(super) fn drain_timeout() -> Duration {
        Duration::from_secs(20)
    }
    pub(super) fn publish_channels() -> usize {
        16
    }
}

impl BusSettings {
    /// The defaults with the given broker URL.
    pub fn new(url: SecretString) -> Self {
        Self {
            url,
            confirm_timeout: defaults::confirm_timeout(),
            connect_timeout: defaults::connect_timeout(),
            prefetch: defaults::prefetch(),
            concurrency: defaults::concurrency(),
            max_attempts: defaults::max_attempts(),
            retry_delays: defaults::retry_delays(),
            reconnect_max_backoff: defaults::reconnect_max_backoff(),
            drain_timeout: defaults::drain_timeout(),
            publish_channels: defaults::publish_channels(),
            queue_type: crate::QueueType::default(),
        }
    }
}

impl Validate for BusSettings {
    fn validate(&self, problems: &mut Vec<String>) {
        cardsync_config::check_url(
            self.url.expose_secret(),
            &["amqp", "amqps"],
            "bus.url",
            problems,
        );
        let positive = [
            ("bus.confirm_timeout", self.confirm_timeout),
            ("bus.connect_timeout", self.connect_timeout),
            ("bus.reconnect_max_backoff", self.reconnect_max_backoff),
            ("bus.drain_timeout", self.drain_timeout),
        ];
        for (key, value) in positive {
            if value.is_zero() {
                problems.push(format!("{key}: must be greater than 0"));
            }
        }
        // prefetch 0 means "unlimited" to RabbitMQ, which defeats back-pressure.
        if self.prefetch == 0 {
            problems.push("bus.prefetch: must be greater than 0".into());
        }
        if self.concurrency == 0 {
            problems.push("bus.concurrency: must be greater than 0".into());
        } else if self.concurrency > usize::from(self.prefetch) {
            problems.push(format!(
                "bus.concurrency: {} exceeds bus.prefetch {} (the extra handlers would never get work)",
                self.concurrency, self.prefetch
            ));
        }
        if self.max_attempts == 0 {
            problems.push("bus.max_attempts: must be at least 1".into());
        }
        if self.max_attempts > 1 && self.retry_delays.is_empty() {
            problems
                .push("bus.retry_delays: needs at least one delay when max_attempts > 1".into());
        }
        if self.retry_delays.iter().any(|d| d.as_millis() == 0) {
            problems.push("bus.retry_delays: every delay must be at least 1ms".into());
        }
        if self
            .retry_delays
            .iter()
            .any(|d| d.as_millis() > u128::from(u32::MAX))
        {
            problems.push("bus.retry_delays: a delay must fit a queue TTL (about 49 days)".into());
        }
        if self.publish_channels == 0 {
            problems.push("bus.publish_channels: must be greater than 0".into());
        }
    }
}

/// Exchange and queue naming, which every service of one deployment must share.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TopologySettings {
    /// Prefix of every exchange and queue name (tests use a unique one per test).
    #[serde(default)]
    pub prefix: String,
}

impl TopologySettings {
    /// cardsync's topology under this prefix.
    pub fn topology(&self) -> crate::Topology {
        crate::Topology::cardsync(&self.prefix)
    }
}

impl Validate for TopologySettings {
    fn validate(&self, problems: &mut Vec<String>) {
        if !self
            .prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            problems.push(
                "topology.prefix: only ASCII letters, digits, '-', '_' and '.' are allowed".into(),
            );
        }
        // The longest name built on it (a retry queue of the card-writer's bulk queue) must
        // stay within AMQP's 255 bytes.
        if self.prefix.len() > 128 {
            problems.push("topology.prefix: at most 128 characters".into());
        }
    }
}

/// Deserializes a list of duration strings (`["1s", "30s"]`) or one comma-separated string
/// (`"1s,30s"`, the form an environment variable takes).
pub fn deserialize_durations<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<String>),
        One(String),
    }
    let items = match Raw::deserialize(deserializer)? {
        Raw::List(items) => items,
        Raw::One(text) => text.split(',').map(str::to_owned).collect(),
    };
    items
        .iter()
        .map(|item| item.trim())
        .filter(|item| !item.is_empty())
        .map(|item| {
            humantime::parse_duration(item).map_err(|e| {
                serde::de::Error::custom(format!("not a duration like \"30s\" or \"250ms\": {e}"))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cardsync_config::{Sources, load};

    #[derive(Debug, Deserialize)]
    struct Root {
        bus: BusSettings,
    }

    impl Validate for Root {
        fn validate(&self, problems: &mut Vec<String>) {
            self.bus.validate(problems);
        }
    }

    const DEFAULTS: &str = "[bus]\nurl = \"amqp://guest:guest@127.0.0.1:5672/%2f\"\n";

    fn env(pairs: &[(&str, &str)]) -> Sources {
        Sources {
            file: None,
            env: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
        }
    }

    fn problems(settings: &BusSettings) -> Vec<String> {
        let mut problems = Vec::new();
        settings.validate(&mut problems);
        problems
    }

    #[test]
    fn only_the_url_is_required_and_the_defaults_are_valid() {
        let root: Root = load(DEFAULTS, &env(&[])).unwrap();
        assert_eq!(root.bus.connect_timeout, Duration::from_secs(1));
        assert_eq!(root.bus.retry_delays.len(), 5);
        assert!(problems(&root.bus).is_empty());
    }

    #[test]
    fn durations_and_delay_lists_come_from_strings() {
        let root: Root = load(
            DEFAULTS,
            &env(&[
                ("CARDSYNC__BUS__CONFIRM_TIMEOUT", "750ms"),
                ("CARDSYNC__BUS__RETRY_DELAYS", "200ms, 1s,5m"),
                ("CARDSYNC__BUS__PREFETCH", "64"),
            ]),
        )
        .unwrap();
        assert_eq!(root.bus.confirm_timeout, Duration::from_millis(750));
        assert_eq!(
            root.bus.retry_delays,
            vec![
                Duration::from_millis(200),
                Duration::from_secs(1),
                Duration::from_secs(300)
            ]
        );
        assert_eq!(root.bus.prefetch, 64);
    }

    #[test]
    fn a_toml_list_of_delays_is_accepted() {
        let root: Root = load(
            &format!("{DEFAULTS}retry_delays = [\"1s\", \"2s\"]\n"),
            &env(&[]),
        )
        .unwrap();
        assert_eq!(
            root.bus.retry_delays,
            vec![Duration::from_secs(1), Duration::from_secs(2)]
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let mut settings = BusSettings::new(SecretString::from("http://u:hunter2@h/"));
        settings.confirm_timeout = Duration::ZERO;
        settings.prefetch = 0;
        settings.max_attempts = 0;
        settings.retry_delays = vec![Duration::ZERO];
        settings.publish_channels = 0;
        let problems = problems(&settings);
        assert_eq!(problems.len(), 7, "{problems:#?}");
        assert!(
            problems.iter().all(|p| !p.contains("hunter2")),
            "{problems:#?}"
        );
    }

    #[test]
    fn concurrency_above_prefetch_is_rejected() {
        let mut settings = BusSettings::new(SecretString::from("amqp://localhost"));
        settings.prefetch = 4;
        settings.concurrency = 5;
        assert_eq!(problems(&settings).len(), 1);
    }

    #[test]
    fn retries_need_a_delay() {
        let mut settings = BusSettings::new(SecretString::from("amqp://localhost"));
        settings.retry_delays.clear();
        assert_eq!(problems(&settings).len(), 1);
        settings.max_attempts = 1;
        assert!(problems(&settings).is_empty());
    }

    #[test]
    fn debug_output_hides_the_password() {
        let settings = BusSettings::new(SecretString::from("amqp://u:hunter2@h:5672/v"));
        assert!(!format!("{settings:?}").contains("hunter2"));
    }
}
