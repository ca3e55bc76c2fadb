//! Wires the subscription manager from settings and runs it until shutdown: the lifecycle
//! consumer (on every replica), the leader's reconciliation pass and monitor sweep (on the one
//! replica holding the monitor lease), once the database schema is current, and the kit's HTTP
//! server for health and metrics. Tests build the same thing with port 0 and an injected clock,
//! and drive the pass, the sweep and the consumer step by step.

use crate::clock::Clock;
use crate::lifecycle::LifecycleHandler;
use crate::manager::{Manager, ManagerParts};
use crate::metrics::Metrics;
use crate::monitor;
use crate::settings::Settings;
use cardsync_bus::{Consumer, Publisher, names};
use cardsync_graph::GraphClient;
use cardsync_runtime::{
    HttpMetrics, HttpServer, Observability, Readiness, SchemaGate, StartupError,
};
use cardsync_telemetry::metrics::Registry;
use sqlx::PgPool;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A built, not yet running subscription manager.
#[derive(Debug)]
pub struct Application {
    http: HttpServer,
    schema: SchemaGate,
    pool: PgPool,
    publisher: Publisher,
    manager: Manager,
    lifecycle: Arc<Consumer>,
    lease_key: i64,
}

impl Application {
    /// Wires every part on the system clock; RabbitMQ and PostgreSQL connect lazily.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        Self::build_with_clock(settings, Clock::system()).await
    }

    /// Wires every part on `clock` (tests advance it with graph-sim's).
    pub async fn build_with_clock(settings: Settings, clock: Clock) -> Result<Self, StartupError> {
        let registry = Registry::new();
        let http_metrics = HttpMetrics::register(&registry, "cardsync_subscription_manager")?;
        let metrics = Metrics::register(&registry)?;
        let pool = cardsync_store::pool_lazy(&settings.postgres)?;
        let topology = settings.topology.topology();
        let publisher = Publisher::lazy(&settings.bus, topology.clone());
        let manager = Manager::new(ManagerParts {
            pool: pool.clone(),
            graph: GraphClient::new(settings.graph.clone())
                .map_err(|error| StartupError::dependency("the Graph client", error))?,
            sealing: Arc::new(
                settings
                    .secrets
                    .keyring()
                    .map_err(|error| StartupError::dependency("the credential key", error))?,
            ),
            publisher: publisher.clone(),
            sync_exchange: topology.name(names::SYNC),
            settings: settings.subscriptions.clone(),
            clock,
            metrics,
        });
        let lifecycle = Arc::new(Consumer::new(
            settings.bus.clone(),
            topology,
            names::SUBSCRIPTION_MANAGER_LIFECYCLE,
        ));
        let schema = SchemaGate::new(pool.clone());
        let readiness = Readiness::new()
            .database(pool.clone())
            .probe("broker", publisher.clone(), |publisher| async move {
                publisher.is_ready().await
            })
            .schema(schema.clone());
        let http = HttpServer::bind(
            &settings.http,
            Observability::new(registry, http_metrics, readiness),
            |_| {},
        )?;
        Ok(Self {
            http,
            schema,
            pool,
            publisher,
            manager,
            lifecycle,
            lease_key: monitor::lease_key(&settings.topology.prefix),
        })
    }

    /// The health/metrics port.
    pub fn port(&self) -> u16 {
        self.http.port()
    }

    /// The manager (tests run its pass and sweep directly).
    pub fn manager(&self) -> &Manager {
        &self.manager
    }

    /// The lifecycle consumer (tests drive it with `process_next`).
    pub fn lifecycle_consumer(&self) -> &Arc<Consumer> {
        &self.lifecycle
    }

    /// The lifecycle handler.
    pub fn lifecycle_handler(&self) -> LifecycleHandler {
        LifecycleHandler::new(self.manager.clone())
    }

    /// Closes the broker connection catch-up requests are published on (for tests that drove the
    /// manager step by step instead of running it).
    pub async fn close(&self) {
        self.publisher.close().await;
    }

    /// Runs the HTTP server at once, and the consumer and the leader's loops once the database
    /// schema is current, until `shutdown`.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let work = tokio::spawn(run_work(
            self.schema.clone(),
            self.lifecycle.clone(),
            Arc::new(self.lifecycle_handler()),
            (self.manager.clone(), self.pool.clone(), self.lease_key),
            shutdown.clone(),
        ));
        let result = self.http.run_until(shutdown).await;
        let _ = work.await;
        self.publisher.close().await;
        result
    }
}

async fn run_work(
    schema: SchemaGate,
    lifecycle: Arc<Consumer>,
    handler: Arc<LifecycleHandler>,
    (manager, pool, lease_key): (Manager, PgPool, i64),
    shutdown: CancellationToken,
) {
    if !schema.wait_until_current(&shutdown).await {
        return;
    }
    let leader = tokio::spawn(monitor::lead(manager, pool, lease_key, shutdown.clone()));
    if let Err(error) = lifecycle.run(handler, shutdown.clone()).await {
        tracing::error!(error = %cardsync_telemetry::error_chain(&error), "lifecycle consumer stopped with an error");
    }
    let _ = leader.await;
}
