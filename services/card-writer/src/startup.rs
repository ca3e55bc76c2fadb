//! Wires the card-writer from settings and runs it until shutdown: the live and bulk consumers,
//! the outbox relay and the kit's HTTP server. Tests use the same path with port 0, consumers
//! and relay off, and drive them step by step through [`Application::handler`] and
//! [`Application::relay`].

use crate::dedup::Dedup;
use crate::handler::{Batching, CommandHandler, CommandQueue, Retries};
use crate::metrics::Metrics;
use crate::relay::Relay;
use crate::settings::Settings;
use cardsync_bus::{BusMetrics, BusSettings, Consumer, Publisher, Topology, names};
use cardsync_runtime::{
    HttpMetrics, HttpServer, Observability, Readiness, SchemaGate, StartupError,
};
use sqlx::PgPool;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A bound, not yet running card-writer.
#[derive(Debug)]
pub struct Application {
    http: HttpServer,
    schema: SchemaGate,
    settings: Settings,
    topology: Topology,
    live: Arc<CommandHandler>,
    bulk: Arc<CommandHandler>,
    relay: Relay,
    publisher: Publisher,
    pool: PgPool,
    bus_metrics: BusMetrics,
}

impl Application {
    /// Binds the listener and wires every part. Needs neither RabbitMQ, PostgreSQL nor Redis to
    /// be up: all connect lazily, and the service reports not-ready until they are.
    pub async fn build(settings: &Settings) -> Result<Self, StartupError> {
        let prometheus = cardsync_telemetry::metrics::Registry::new();
        let http_metrics = HttpMetrics::register(&prometheus, "cardsync_card_writer")?;
        let metrics = Metrics::register(&prometheus)?;
        let bus_metrics = BusMetrics::register(&prometheus)?;
        let pool = cardsync_store::pool_lazy(&settings.postgres)?;
        // Bulk commands get their own small pool: a nightly reconcile can never hold every
        // connection a live update needs.
        let mut bulk_postgres = settings.postgres.clone();
        bulk_postgres.max_connections = settings.card_writer.bulk_max_connections;
        let bulk_pool = cardsync_store::pool_lazy(&bulk_postgres)?;
        let topology = settings
            .topology
            .topology()
            .with_retry_delays(&settings.bus.retry_delays);
        let publisher = Publisher::lazy(&settings.bus, topology.clone());
        let dedup = Dedup::new(&settings.redis, settings.card_writer.dedup_ttl);
        let wake = Arc::new(Notify::new());
        let events_exchange = topology.name(names::CARD_EVENTS);
        let writer = &settings.card_writer;
        let retries = Retries {
            max_attempts: settings.bus.max_attempts,
            delays: settings.bus.retry_delays.clone(),
        };
        let live = Arc::new(CommandHandler::new(
            CommandQueue::Live,
            pool.clone(),
            dedup.clone(),
            metrics.clone(),
            wake.clone(),
            events_exchange.clone(),
            Batching {
                transactions: writer.live_transactions,
                max_commands: writer.max_batch,
            },
            retries.clone(),
        ));
        let bulk = Arc::new(CommandHandler::new(
            CommandQueue::Bulk,
            bulk_pool,
            dedup,
            metrics.clone(),
            wake.clone(),
            events_exchange.clone(),
            Batching {
                transactions: writer.bulk_transactions,
                max_commands: writer.max_batch,
            },
            retries,
        ));
        let relay = Relay::new(
            pool.clone(),
            publisher.clone(),
            topology.clone(),
            metrics.clone(),
            settings.relay.clone(),
            wake.clone(),
        );

        let schema = SchemaGate::new(pool.clone());
        let readiness = Readiness::new()
            .database(pool.clone())
            .probe("broker", publisher.clone(), |publisher| async move {
                publisher.is_ready().await
            })
            .schema(schema.clone());
        // Health and metrics only: cards are read and edited through the admin API.
        let http = HttpServer::bind(
            &settings.http,
            Observability::new(prometheus, http_metrics, readiness),
            |_| {},
        )?;

        Ok(Self {
            http,
            schema,
            settings: settings.clone(),
            topology,
            live,
            bulk,
            relay,
            publisher,
            pool,
            bus_metrics,
        })
    }

    /// The bound port (useful with port 0).
    pub fn port(&self) -> u16 {
        self.http.port()
    }

    /// The handler of one command queue (tests drive it with [`Consumer::process_next`]).
    pub fn handler(&self, queue: CommandQueue) -> Arc<CommandHandler> {
        match queue {
            CommandQueue::Live => self.live.clone(),
            CommandQueue::Bulk => self.bulk.clone(),
        }
    }

    /// A consumer of one command queue with that queue's prefetch and concurrency.
    pub fn consumer(&self, queue: CommandQueue) -> Consumer {
        Consumer::new(
            consumer_settings(&self.settings, queue),
            self.topology.clone(),
            queue.queue_name(),
        )
        .with_metrics(&self.bus_metrics)
    }

    /// The outbox relay.
    pub fn relay(&self) -> Relay {
        self.relay.clone()
    }

    /// The card store's pool.
    pub fn pool(&self) -> PgPool {
        self.pool.clone()
    }

    /// Runs until `shutdown` is cancelled: consumers and the relay start once the database
    /// schema is current; on shutdown consumers stop taking messages and drain, the relay
    /// publishes what is left, HTTP requests in flight finish within `http.shutdown_timeout`.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let relay_stop = CancellationToken::new();
        let work = tokio::spawn(run_work(
            WorkParts {
                settings: self.settings.clone(),
                schema: self.schema.clone(),
                live: self.live.clone(),
                bulk: self.bulk.clone(),
                live_consumer: self.consumer(CommandQueue::Live),
                bulk_consumer: self.consumer(CommandQueue::Bulk),
                relay: self.relay.clone(),
            },
            shutdown.clone(),
            relay_stop.clone(),
        ));
        let result = self.http.run_until(shutdown.clone()).await;
        // Consumers drain first (their commits may enqueue events), then the relay's last pass.
        shutdown.cancel();
        let _ = work.await;
        self.publisher.close().await;
        tracing::debug!("card-writer resources closed");
        result
    }
}

/// What the background work needs.
struct WorkParts {
    settings: Settings,
    schema: SchemaGate,
    live: Arc<CommandHandler>,
    bulk: Arc<CommandHandler>,
    live_consumer: Consumer,
    bulk_consumer: Consumer,
    relay: Relay,
}

/// The consumers and the relay: started once the schema is current, stopped in order.
async fn run_work(parts: WorkParts, shutdown: CancellationToken, relay_stop: CancellationToken) {
    if !parts.schema.wait_until_current(&shutdown).await {
        return;
    }
    let mut consumers = tokio::task::JoinSet::new();
    if parts.settings.card_writer.consume {
        for (queue, handler, consumer) in [
            (CommandQueue::Live, parts.live, parts.live_consumer),
            (CommandQueue::Bulk, parts.bulk, parts.bulk_consumer),
        ] {
            let shutdown = shutdown.clone();
            consumers.spawn(async move {
                if let Err(error) = consumer.run(handler, shutdown).await {
                    tracing::error!(error = %cardsync_telemetry::error_chain(&error), queue = queue.as_str(), "consumer stopped");
                }
            });
        }
    }
    let relay = parts
        .settings
        .relay
        .enabled
        .then(|| tokio::spawn(parts.relay.run(relay_stop.clone())));
    shutdown.cancelled().await;
    while consumers.join_next().await.is_some() {}
    relay_stop.cancel();
    if let Some(relay) = relay {
        let timeout = parts.settings.http.shutdown_timeout;
        // Bounded: rows the last pass cannot publish stay in the outbox for the next start.
        if tokio::time::timeout(timeout, relay).await.is_err() {
            tracing::warn!(
                ?timeout,
                "outbox relay's last pass did not finish; its rows wait for the next start"
            );
        }
    }
}

/// The bus settings of one command queue's consumer.
pub fn consumer_settings(settings: &Settings, queue: CommandQueue) -> BusSettings {
    let mut bus = settings.bus.clone();
    let writer = &settings.card_writer;
    match queue {
        CommandQueue::Live => {
            bus.prefetch = writer.live_prefetch;
            bus.concurrency = writer.live_concurrency;
        }
        CommandQueue::Bulk => {
            bus.prefetch = writer.bulk_prefetch;
            bus.concurrency = writer.bulk_concurrency;
        }
    }
    bus
}
