//! Wires the reconciler from settings: `serve` consumes reconcile requests once the database
//! schema is current, beside the kit's HTTP server for health and metrics; `due` makes one pass
//! over the schedules and exits. Tests build the same thing with port 0 and drive it step by
//! step.

use crate::due::{self, DueReport};
use crate::handler::{self, ReconcileHandler};
use crate::settings::Settings;
use anyhow::Context as _;
use cardsync_bus::{BusMetrics, Consumer, Publisher, Topology, names};
use cardsync_rounds::{Rounds, RoundsConfig, Wired};
use cardsync_runtime::{
    HttpMetrics, HttpServer, Observability, Readiness, SchemaGate, StartupError,
};
use cardsync_telemetry::metrics::{IntCounterVec, Registry};
use sqlx::PgPool;
use std::sync::Arc;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

/// A built, not yet running reconciler.
#[derive(Debug)]
pub struct Application {
    http: HttpServer,
    schema: SchemaGate,
    pool: PgPool,
    publisher: Publisher,
    topology: Topology,
    rounds: Arc<Rounds>,
    requests: Arc<Consumer>,
    runs: IntCounterVec,
    settings: Settings,
}

impl Application {
    /// Wires every part; RabbitMQ, PostgreSQL and Redis connect lazily.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let registry = Registry::new();
        let http_metrics = HttpMetrics::register(&registry, "cardsync_reconciler")?;
        let runs = handler::register_runs(&registry)?;
        let topology = settings.topology.topology();
        let Wired {
            rounds,
            pool,
            publisher,
            redis,
        } = cardsync_rounds::wire(
            RoundsConfig {
                postgres: &settings.postgres,
                redis: &settings.redis,
                graph: &settings.graph,
                bus: &settings.bus,
                topology: &topology,
                secrets: &settings.secrets,
                rounds: &settings.worker,
                photos: &settings.photos,
            },
            &registry,
        )
        .map_err(|error| StartupError::dependency(error.what, error.source))?;
        let requests = Arc::new(
            Consumer::new(
                settings.bus.clone(),
                topology.clone(),
                names::RECONCILER_REQUESTS,
            )
            .with_metrics(&BusMetrics::register(&registry)?),
        );
        let schema = SchemaGate::new(pool.clone());
        let readiness = Readiness::new()
            .database(pool.clone())
            .probe("redis", redis, cardsync_rounds::redis_ready)
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
            topology,
            rounds,
            requests,
            runs,
            settings,
        })
    }

    /// The health/metrics port.
    pub fn port(&self) -> u16 {
        self.http.port()
    }

    /// The rounds (tests run the delta-worker's rounds through them to set a tenant up).
    pub fn rounds(&self) -> &Arc<Rounds> {
        &self.rounds
    }

    /// The consumer of reconcile requests (tests drive it with `process_next`).
    pub fn requests_consumer(&self) -> &Arc<Consumer> {
        &self.requests
    }

    /// The handler of reconcile requests.
    pub fn handler(&self) -> ReconcileHandler {
        ReconcileHandler::new(
            self.rounds.clone(),
            self.pool.clone(),
            self.settings.reconciler.clone(),
            self.runs.clone(),
        )
    }

    /// One `due` pass at `now`: what the `due` command does, with the clock given.
    pub async fn due(&self, now: OffsetDateTime) -> Result<DueReport, due::DueError> {
        due::enqueue_due(
            &self.pool,
            &self.publisher,
            &self.topology,
            &self.settings.reconciler,
            now,
        )
        .await
    }

    /// Closes the broker connections (for tests that drove the reconciler step by step).
    pub async fn close(&self) {
        self.requests.close().await;
        self.publisher.close().await;
    }

    /// Runs the HTTP server at once and the consumer once the database schema is current,
    /// until `shutdown`; then reconciles in progress stop before their next effect, release
    /// the tenant's lease and go back to the queue.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let work = tokio::spawn({
            let (schema, requests, handler, shutdown) = (
                self.schema.clone(),
                self.requests.clone(),
                Arc::new(self.handler()),
                shutdown.clone(),
            );
            async move {
                if !schema.wait_until_current(&shutdown).await {
                    return;
                }
                if let Err(error) = requests.run(handler, shutdown).await {
                    tracing::error!(error = %cardsync_telemetry::error_chain(&error), "consumer stopped with an error");
                }
            }
        });
        let stop_rounds = tokio::spawn({
            let (rounds, shutdown) = (self.rounds.clone(), shutdown.clone());
            async move {
                shutdown.cancelled().await;
                rounds.stop();
            }
        });
        let result = self.http.run_until(shutdown).await;
        let _ = work.await;
        stop_rounds.abort();
        self.publisher.close().await;
        result
    }
}

/// The `due` command: one pass now, refusing a database whose schema is behind this binary.
/// Serves nothing: a CronJob's pod needs no health port.
pub async fn due(settings: Settings) -> anyhow::Result<()> {
    let pool = cardsync_store::pool(&settings.postgres)
        .await
        .context("connecting to PostgreSQL")?;
    let version = cardsync_store::schema_version(&pool)
        .await
        .context("reading the schema version")?;
    anyhow::ensure!(
        version.current,
        "the database schema is behind this binary: run `reconciler migrate` first"
    );
    let topology = settings.topology.topology();
    let publisher = Publisher::connect(&settings.bus, topology.clone())
        .await
        .context("connecting to RabbitMQ")?;
    let outcome = due::enqueue_due(
        &pool,
        &publisher,
        &topology,
        &settings.reconciler,
        OffsetDateTime::now_utc(),
    )
    .await;
    publisher.close().await;
    let report = outcome.context("enqueuing due runs")?;
    tracing::info!(
        abandoned = report.abandoned,
        enqueued = report.enqueued,
        requeued = report.requeued,
        unsettled = report.unsettled,
        deleted = report.deleted,
        live_ended = report.live_ended,
        "due runs enqueued"
    );
    sweep_photos(&settings, &pool).await
}

/// The due job's second task: delete the stored photo images no card and no snapshot row names
/// any more (a photo replaced or removed, a card deleted, a tenant offboarded), past the grace
/// period that protects an image a round has just stored.
pub async fn sweep_photos(settings: &Settings, pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let store =
        cardsync_photos::PhotoStore::open(&settings.photos).context("opening the photo store")?;
    let swept = cardsync_photos::sweep(&store, pool, settings.photos.sweep_grace)
        .await
        .context("sweeping unreferenced photo images")?;
    tracing::info!(
        examined = swept.examined,
        young = swept.young,
        referenced = swept.referenced,
        deleted = swept.deleted,
        "photo images swept"
    );
    Ok(())
}
