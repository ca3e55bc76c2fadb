//! The card-writer's settings, loaded through the shared loader over `config/default.toml`.

use cardsync_bus::{BusSettings, TopologySettings};
use cardsync_config::{HttpSettings, PostgresSettings, RedisSettings, TelemetrySettings, Validate};
use serde::Deserialize;
use std::time::Duration;

/// Embedded defaults.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

/// Everything the card-writer needs to run.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// HTTP listener (health and metrics).
    pub http: HttpSettings,
    /// Consumers and dedup.
    pub card_writer: CardWriterSettings,
    /// The outbox relay.
    pub relay: RelaySettings,
    /// RabbitMQ.
    pub bus: BusSettings,
    /// Exchange and queue naming.
    pub topology: TopologySettings,
    /// PostgreSQL (cards, tenants, outbox).
    pub postgres: PostgresSettings,
    /// Redis (the dedup fast path only).
    pub redis: RedisSettings,
    /// Logs and traces.
    pub telemetry: TelemetrySettings,
}

/// How commands are consumed.
#[derive(Debug, Clone, Deserialize)]
pub struct CardWriterSettings {
    /// Whether the live and bulk consumers run (tests drive them step by step instead).
    pub consume: bool,
    /// Lifetime of a Redis dedup key.
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub dedup_ttl: Duration,
    /// Prefetch of the live consumer.
    pub live_prefetch: u16,
    /// Handlers running at once on the live queue.
    pub live_concurrency: usize,
    /// Prefetch of the bulk consumer.
    pub bulk_prefetch: u16,
    /// Handlers running at once on the bulk queue.
    pub bulk_concurrency: usize,
    /// Size of the bulk consumer's own PostgreSQL pool.
    pub bulk_max_connections: u32,
    /// Transactions applying live commands at once (batches, see `max_batch`).
    pub live_transactions: usize,
    /// Transactions applying bulk commands at once.
    pub bulk_transactions: usize,
    /// Most commands applied in one transaction. The handlers waiting at a moment (up to the
    /// queue's concurrency) are what a batch is made of, so concurrency bounds it too.
    pub max_batch: usize,
}

/// The outbox relay.
#[derive(Debug, Clone, Deserialize)]
pub struct RelaySettings {
    /// Whether the relay runs in the background.
    pub enabled: bool,
    /// How often it looks for unpublished rows when nothing wakes it.
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub poll_interval: Duration,
    /// How long a woken relay waits for more commits before it claims rows (events wait this
    /// much longer; the relay makes fewer, larger batches under load).
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub linger: Duration,
    /// Rows per published batch.
    pub batch_size: u32,
}

impl Validate for Settings {
    fn validate(&self, problems: &mut Vec<String>) {
        self.http.validate(problems);
        self.bus.validate(problems);
        self.topology.validate(problems);
        self.postgres.validate(problems);
        self.redis.validate(problems);
        self.telemetry.validate(problems);
        let writer = &self.card_writer;
        for (key, value) in [
            ("card_writer.live_concurrency", writer.live_concurrency),
            ("card_writer.bulk_concurrency", writer.bulk_concurrency),
            (
                "card_writer.live_prefetch",
                usize::from(writer.live_prefetch),
            ),
            (
                "card_writer.bulk_prefetch",
                usize::from(writer.bulk_prefetch),
            ),
            ("card_writer.live_transactions", writer.live_transactions),
            ("card_writer.bulk_transactions", writer.bulk_transactions),
            ("card_writer.max_batch", writer.max_batch),
        ] {
            if value == 0 {
                problems.push(format!("{key}: must be greater than 0"));
            }
        }
        if writer.live_concurrency > usize::from(writer.live_prefetch) {
            problems.push("card_writer.live_concurrency: must not exceed live_prefetch".into());
        }
        if writer.bulk_concurrency > usize::from(writer.bulk_prefetch) {
            problems.push("card_writer.bulk_concurrency: must not exceed bulk_prefetch".into());
        }
        if writer.bulk_transactions > writer.bulk_max_connections as usize {
            problems
                .push("card_writer.bulk_transactions: must not exceed bulk_max_connections".into());
        }
        if writer.bulk_max_connections == 0 {
            problems.push("card_writer.bulk_max_connections: must be greater than 0".into());
        }
        if writer.dedup_ttl.is_zero() {
            problems.push("card_writer.dedup_ttl: must be greater than 0".into());
        }
        if self.relay.batch_size == 0 {
            problems.push("relay.batch_size: must be greater than 0".into());
        }
        if self.relay.poll_interval.is_zero() {
            problems.push("relay.poll_interval: must be greater than 0".into());
        }
    }
}

cardsync_runtime::service_settings!(Settings, DEFAULTS, "card-writer");

#[cfg(test)]
mod tests {
    use super::*;
    use cardsync_config::Sources;

    #[test]
    fn the_embedded_defaults_are_valid() {
        let settings = Settings::load(&Sources::embedded_only()).unwrap();
        assert!(settings.card_writer.consume);
        assert_eq!(settings.relay.batch_size, 256);
    }

    #[test]
    fn a_bulk_concurrency_above_its_prefetch_is_refused() {
        let sources = Sources {
            file: None,
            env: Some(vec![
                ("CARDSYNC__CARD_WRITER__BULK_PREFETCH".into(), "128".into()),
                (
                    "CARDSYNC__CARD_WRITER__BULK_CONCURRENCY".into(),
                    "129".into(),
                ),
            ]),
        };
        let error = Settings::load(&sources).unwrap_err();
        assert!(error.to_string().contains("bulk_concurrency"), "{error}");
    }
}
