//! Builds the card-writer from settings and runs it until shutdown: the live and bulk consumers,
//! the outbox relay and the HTTP server. Tests use the same path with port 0, consumers and relay
//! off, and drive them step by step through [`Application::handler`] and
//! [`Application::relay`].

use crate::dedup::Dedup;
use crate::handler::{Batching, CommandHandler, CommandQueue};
use crate::metrics::Metrics;
use crate::relay::Relay;
use crate::routes::{self, AppState};
use crate::settings::Settings;
use actix_web::dev::{Server, Service as _};
use actix_web::{App, HttpServer, web};
use cardsync_bus::{BusSettings, Consumer, Publisher, Topology, names};
use cardsync_telemetry::metrics::IntGauge;
use sqlx::PgPool;
use std::net::TcpListener;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A bound, not yet running card-writer.
pub struct Application {
    port: u16,
    server: Server,
    settings: Settings,
    topology: Topology,
    live: Arc<CommandHandler>,
    bulk: Arc<CommandHandler>,
    relay: Relay,
    publisher: Publisher,
    pool: PgPool,
    in_flight: IntGauge,
}

/// Why the card-writer could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The listen address could not be bound.
    #[error("cannot listen on the configured address")]
    Bind(#[source] std::io::Error),
    /// The database settings are unusable.
    #[error("cannot set up the database pool")]
    Store(#[from] cardsync_store::StoreError),
    /// Metrics could not be registered.
    #[error("cannot register metrics")]
    Metrics(#[from] cardsync_telemetry::metrics::MetricsError),
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Binds the listener and wires every part. Needs neither RabbitMQ, PostgreSQL nor Redis to
    /// be up: all connect lazily, and the service reports not-ready until they are.
    pub async fn build(settings: &Settings) -> Result<Self, StartupError> {
        let prometheus = cardsync_telemetry::metrics::Registry::new();
        let metrics = Metrics::register(&prometheus)?;
        let pool = cardsync_store::pool_lazy(&settings.postgres)?;
        // Bulk commands get their own small pool: a nightly reconcile can never hold every
        // connection a live update needs.
        let mut bulk_postgres = settings.postgres.clone();
        bulk_postgres.max_connections = settings.card_writer.bulk_max_connections;
        let bulk_pool = cardsync_store::pool_lazy(&bulk_postgres)?;
        let topology = Topology::cardsync(&settings.topology.prefix)
            .with_retry_delays(&settings.bus.retry_delays);
        let publisher = Publisher::lazy(&settings.bus, topology.clone());
        let dedup = Dedup::new(&settings.redis, settings.card_writer.dedup_ttl);
        let wake = Arc::new(Notify::new());
        let events_exchange = topology.name(names::CARD_EVENTS);
        let writer = &settings.card_writer;
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
        ));
        let relay = Relay::new(
            pool.clone(),
            publisher.clone(),
            topology.clone(),
            metrics.clone(),
            settings.relay.clone(),
            wake.clone(),
        );

        let state = web::Data::new(AppState {
            pool: pool.clone(),
            publisher: publisher.clone(),
            relay_wake: wake,
            events_exchange,
            prometheus,
        });
        let in_flight = metrics.http_in_flight.clone();
        let body_limit = settings.http.body_limit_bytes;
        let listener = TcpListener::bind(settings.http.listen).map_err(StartupError::Bind)?;
        let port = listener.local_addr().map_err(StartupError::Bind)?.port();
        let server = HttpServer::new(move || {
            let http_metrics = metrics.clone();
            App::new()
                .app_data(state.clone())
                .app_data(web::PayloadConfig::new(body_limit))
                .wrap_fn(move |request, service| {
                    let started = std::time::Instant::now();
                    let route = request
                        .match_pattern()
                        .unwrap_or_else(|| "unmatched".to_owned());
                    let metrics = http_metrics.clone();
                    metrics.http_in_flight.inc();
                    let response = service.call(request);
                    async move {
                        let response = response.await;
                        metrics.http_in_flight.dec();
                        let response = response?;
                        let status = response.status().as_u16().to_string();
                        metrics
                            .http_requests
                            .with_label_values(&[&route, &status])
                            .inc();
                        metrics
                            .http_duration
                            .with_label_values(&[&route, &status])
                            .observe(started.elapsed().as_secs_f64());
                        Ok(response)
                    }
                })
                .wrap(tracing_actix_web::TracingLogger::default())
                .configure(routes::configure)
        })
        .disable_signals()
        .shutdown_timeout(settings.card_writer.shutdown_timeout.as_secs().max(1))
        .listen(listener)
        .map_err(StartupError::Bind)?
        .run();

        Ok(Self {
            port,
            server,
            settings: settings.clone(),
            topology,
            live,
            bulk,
            relay,
            publisher,
            pool,
            in_flight,
        })
    }

    /// The bound port (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
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
    }

    /// The outbox relay.
    pub fn relay(&self) -> Relay {
        self.relay.clone()
    }

    /// The card store's pool.
    pub fn pool(&self) -> PgPool {
        self.pool.clone()
    }

    /// Runs until `shutdown` is cancelled: consumers stop taking messages and drain, the relay
    /// publishes what is left, HTTP requests in flight finish within the shutdown timeout.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let mut consumers = tokio::task::JoinSet::new();
        if self.settings.card_writer.consume {
            for (queue, handler) in [
                (CommandQueue::Live, self.live.clone()),
                (CommandQueue::Bulk, self.bulk.clone()),
            ] {
                let consumer = self.consumer(queue);
                let shutdown = shutdown.clone();
                consumers.spawn(async move {
                    if let Err(error) = consumer.run(handler, shutdown).await {
                        tracing::error!(error = %cardsync_bus::error_chain(&error), queue = queue.label(), "consumer stopped");
                    }
                });
            }
        }
        let relay_stop = CancellationToken::new();
        let relay = self
            .settings
            .relay
            .enabled
            .then(|| tokio::spawn(self.relay.clone().run(relay_stop.clone())));
        let handle = self.server.handle();
        let timeout = self.settings.card_writer.shutdown_timeout;
        let in_flight = self.in_flight.clone();
        let stopper = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                shutdown.cancelled().await;
                tracing::info!(?timeout, "shutting down");
                handle.pause().await;
                let deadline = tokio::time::Instant::now() + timeout;
                while in_flight.get() > 0 && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                // Every started request is done (or the deadline passed): close what is left,
                // idle keep-alive connections included, instead of waiting for clients to hang up.
                handle.stop(false).await;
            }
        });
        let result = self.server.await;
        stopper.abort();
        // Consumers drain first (their commits may enqueue events), then the relay's last pass.
        shutdown.cancel();
        while consumers.join_next().await.is_some() {}
        relay_stop.cancel();
        if let Some(relay) = relay {
            // Bounded: rows the last pass cannot publish stay in the outbox for the next start.
            if tokio::time::timeout(timeout, relay).await.is_err() {
                tracing::warn!(
                    ?timeout,
                    "outbox relay's last pass did not finish; its rows wait for the next start"
                );
            }
        }
        self.publisher.close().await;
        tracing::debug!("card-writer resources closed");
        result
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
