//! Building [`Rounds`] from a service's settings sections, written once for every service that
//! runs rounds (the delta-worker, the reconciler): the lazy PostgreSQL pool, Redis, the Graph
//! client, the card-command publisher and the credential key.

use crate::{RedisState, RoundMetrics, RoundParts, RoundSettings, Rounds};
use cardsync_bus::{BusSettings, Publisher, Topology, names};
use cardsync_config::{PostgresSettings, RedisSettings};
use cardsync_graph::{GraphClient, GraphMetrics, GraphSettings};
use cardsync_photos::{PhotoSettings, PhotoStore};
use cardsync_store::sealing::SecretsSettings;
use cardsync_telemetry::metrics::Registry;
use redis::aio::ConnectionManager;
use secrecy::ExposeSecret as _;
use sqlx::PgPool;
use std::sync::Arc;

/// The settings sections rounds are built from.
#[derive(Debug, Clone, Copy)]
pub struct RoundsConfig<'a> {
    /// PostgreSQL.
    pub postgres: &'a PostgresSettings,
    /// Redis (leases, delta links).
    pub redis: &'a RedisSettings,
    /// Graph.
    pub graph: &'a GraphSettings,
    /// RabbitMQ.
    pub bus: &'a BusSettings,
    /// The broker layout (card commands go to its `cards` exchange).
    pub topology: &'a Topology,
    /// The keys that seal tenant credentials.
    pub secrets: &'a SecretsSettings,
    /// Lease, photo budget, publish batch.
    pub rounds: &'a RoundSettings,
    /// Where photo images are stored, and their size.
    pub photos: &'a PhotoSettings,
}

/// What [`wire`] built: the rounds and the connections the service also needs (for its own
/// queries, readiness probes and shutdown).
#[derive(Debug)]
pub struct Wired {
    /// The rounds.
    pub rounds: Arc<Rounds>,
    /// The system of record (connects lazily).
    pub pool: PgPool,
    /// The card-command publisher (connects lazily).
    pub publisher: Publisher,
    /// Redis (connects lazily).
    pub redis: ConnectionManager,
}

/// A part that could not be set up, and why.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up {what}")]
pub struct WireError {
    /// What it is.
    pub what: &'static str,
    /// Why.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Maps a part's error to a [`WireError`] naming the part.
fn failed<E>(what: &'static str) -> impl FnOnce(E) -> WireError
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    move |source| WireError {
        what,
        source: source.into(),
    }
}

/// Builds the rounds of a process, registering their metrics (rounds, Graph) on `registry`. Nothing connects
/// yet: the pool, Redis and the broker connect on first use.
pub fn wire(config: RoundsConfig<'_>, registry: &Registry) -> Result<Wired, WireError> {
    let metrics = RoundMetrics::register(registry).map_err(failed("metrics"))?;
    let pool = cardsync_store::pool_lazy(config.postgres).map_err(failed("postgres"))?;
    let client = redis::Client::open(config.redis.url.expose_secret()).map_err(failed("redis"))?;
    let redis =
        ConnectionManager::new_lazy_with_config(client, redis::aio::ConnectionManagerConfig::new())
            .map_err(failed("redis"))?;
    let publisher = Publisher::lazy(config.bus, config.topology.clone());
    let graph = GraphClient::new(config.graph.clone())
        .map_err(failed("the Graph client"))?
        .with_metrics(&GraphMetrics::register(registry).map_err(failed("metrics"))?);
    let sealing = config
        .secrets
        .keyring()
        .map_err(failed("the credential key"))?;
    let rounds = Arc::new(Rounds::new(RoundParts {
        pool: pool.clone(),
        graph,
        publisher: publisher.clone(),
        redis: RedisState::new(redis.clone(), &config.redis.key_prefix),
        sealing: Arc::new(sealing),
        settings: config.rounds.clone(),
        metrics,
        cards_exchange: config.topology.name(names::CARDS),
        events_exchange: config.topology.name(names::CARD_EVENTS),
        photos: PhotoStore::open(config.photos).map_err(failed("the photo store"))?,
        photo_size: config.photos.size,
    }));
    Ok(Wired {
        rounds,
        pool,
        publisher,
        redis,
    })
}

/// Whether Redis answers a PING (a readiness probe).
pub async fn redis_ready(mut redis: ConnectionManager) -> bool {
    redis::cmd("PING")
        .query_async::<String>(&mut redis)
        .await
        .is_ok()
}
