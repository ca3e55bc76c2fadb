//! Wires the delta-worker from settings and runs it until shutdown: the two consumers
//! (changes, sync requests) and the idle-tenant safety poll, started once the database schema
//! is current, and the kit's HTTP server for health and metrics. Tests build the same thing
//! with port 0 and drive it step by step.

use crate::coalesce::{Coalescer, Covered, Trigger};
use crate::handlers::{self, ChangeHandler, SyncRequestHandler};
use crate::settings::Settings;
use cardsync_bus::{BusMetrics, Consumer, Publisher, names};
use cardsync_proto as proto;
use cardsync_rounds::{RoundsConfig, Wired};
use cardsync_runtime::{
    HttpMetrics, HttpServer, Observability, Readiness, SchemaGate, StartupError,
};
use cardsync_telemetry::metrics::{IntCounterVec, Registry};
use sqlx::PgPool;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A built, not yet running delta-worker.
#[derive(Debug)]
pub struct Application {
    http: HttpServer,
    schema: SchemaGate,
    pool: PgPool,
    publisher: Publisher,
    coalescer: Coalescer,
    notifications: IntCounterVec,
    changes: Arc<Consumer>,
    requests: Arc<Consumer>,
    settings: Settings,
}

impl Application {
    /// Wires every part; RabbitMQ and PostgreSQL connect lazily, Redis lazily too.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let registry = Registry::new();
        let http_metrics = HttpMetrics::register(&registry, "cardsync_delta_worker")?;
        let notifications = handlers::register_notifications(&registry)?;
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
                rounds: &settings.worker.rounds,
                photos: &settings.photos,
            },
            &registry,
        )
        .map_err(|error| StartupError::dependency(error.what, error.source))?;
        let coalescer = Coalescer::new(rounds);
        let bus_metrics = BusMetrics::register(&registry)?;
        let changes = Arc::new(
            Consumer::new(
                settings.bus.clone(),
                topology.clone(),
                names::DELTA_WORKER_CHANGES,
            )
            .with_metrics(&bus_metrics),
        );
        let requests = Arc::new(
            Consumer::new(settings.bus.clone(), topology, names::DELTA_WORKER_REQUESTS)
                .with_metrics(&bus_metrics),
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
            coalescer,
            notifications,
            changes,
            requests,
            settings,
        })
    }

    /// The health/metrics port.
    pub fn port(&self) -> u16 {
        self.http.port()
    }

    /// Round scheduling (tests trigger rounds through it).
    pub fn coalescer(&self) -> &Coalescer {
        &self.coalescer
    }

    /// The consumer of Graph changes (tests drive it with `process_next`).
    pub fn changes_consumer(&self) -> &Arc<Consumer> {
        &self.changes
    }

    /// The consumer of sync requests.
    pub fn requests_consumer(&self) -> &Arc<Consumer> {
        &self.requests
    }

    /// The handler of Graph changes.
    pub fn change_handler(&self) -> ChangeHandler {
        ChangeHandler::new(self.coalescer.clone(), self.notifications.clone())
    }

    /// The handler of sync requests.
    pub fn request_handler(&self) -> SyncRequestHandler {
        SyncRequestHandler::new(self.coalescer.clone(), self.pool.clone())
    }

    /// Closes the broker connection card commands are published on (for tests that drove the
    /// worker step by step instead of running it).
    pub async fn close(&self) {
        self.publisher.close().await;
    }

    /// Runs the HTTP server at once, and the consumers and the safety poll once the database
    /// schema is current, until `shutdown`. Then rounds in progress stop before their next
    /// effect and release their leases, their triggers go back to the queue, and the consumers
    /// drain before this returns.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let work = tokio::spawn(run_work(
            self.schema.clone(),
            self.changes.clone(),
            Arc::new(self.change_handler()),
            self.requests.clone(),
            Arc::new(self.request_handler()),
            (
                self.coalescer.clone(),
                self.pool.clone(),
                self.settings.clone(),
            ),
            shutdown.clone(),
        ));
        // Rounds in progress stop at their next safe point and release their leases, so the
        // consumers' drain is short and another replica takes the tenants at once.
        let stop_rounds = tokio::spawn({
            let (rounds, shutdown) = (self.coalescer.rounds().clone(), shutdown.clone());
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

/// The consumers and the safety poll, once the schema is current; returns when both consumers
/// drained after `shutdown`.
async fn run_work(
    schema: SchemaGate,
    changes: Arc<Consumer>,
    change_handler: Arc<ChangeHandler>,
    requests: Arc<Consumer>,
    request_handler: Arc<SyncRequestHandler>,
    (coalescer, pool, settings): (Coalescer, PgPool, Settings),
    shutdown: CancellationToken,
) {
    if !schema.wait_until_current(&shutdown).await {
        return;
    }
    let poll = tokio::spawn(safety_poll(coalescer, pool, settings, shutdown.clone()));
    let (changes, requests) = tokio::join!(
        changes.run(change_handler, shutdown.clone()),
        requests.run(request_handler, shutdown.clone()),
    );
    for result in [changes, requests] {
        if let Err(error) = result {
            tracing::error!(error = %cardsync_telemetry::error_chain(&error), "consumer stopped with an error");
        }
    }
    poll.abort();
}

/// The tenants the safety poll starts a round for: those idle longer than
/// `safety_poll_interval`, and those whose photo or admin-role check is due and that had no
/// round for that check's interval (a busy tenant's own rounds run its checks).
async fn poll_due(
    pool: &PgPool,
    settings: &Settings,
) -> Result<Vec<uuid::Uuid>, cardsync_store::StoreError> {
    let mut tenants =
        cardsync_store::directory::idle_tenants(pool, settings.worker.safety_poll_interval).await?;
    let rounds = &settings.worker.rounds;
    for tenant in cardsync_store::checks::tenants_due(
        pool,
        rounds.photo_check_interval,
        rounds.roles_check_interval,
    )
    .await?
    {
        if !tenants.contains(&tenant) {
            tenants.push(tenant);
        }
    }
    Ok(tenants)
}

/// Every `safety_poll_tick`, starts a round for each tenant idle longer than
/// `safety_poll_interval` (Graph never says when user notifications were lost) or due for its
/// photo or admin-role check.
///
/// The first sweep comes one tick after start, not at once: a tenant that never had a round
/// counts as idle, and a sweep at start would race whatever the operator or the notifications
/// start for it (a new tenant's initial sync, a request made just after a deploy), and would
/// have every replica of a rolling deploy sweep all tenants together.
async fn safety_poll(
    coalescer: Coalescer,
    pool: PgPool,
    settings: Settings,
    shutdown: CancellationToken,
) {
    let tick = settings.worker.safety_poll_tick;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if let Err(error) = coalescer.rounds().refresh_rail_gauges().await {
            tracing::warn!(error = %cardsync_telemetry::error_chain(&error), "safety rail gauges not refreshed");
        }
        let tenants = match poll_due(&pool, &settings).await {
            Ok(tenants) => tenants,
            Err(error) => {
                tracing::warn!(error = %cardsync_telemetry::error_chain(&error), "safety poll cannot list tenants");
                continue;
            }
        };
        for tenant in tenants {
            let coalescer = coalescer.clone();
            tokio::spawn(async move {
                if let Covered::Failed(error) = coalescer
                    .covered(tenant, Trigger::of(proto::Cause::SafetyPoll))
                    .await
                {
                    tracing::warn!(%tenant, error = %cardsync_telemetry::error_chain(&error), "safety poll round failed");
                }
            });
        }
    }
}
