//! Builds the delta-worker from settings and runs it until shutdown: the two consumers
//! (changes, sync requests), the idle-tenant safety poll, and a small HTTP server for health
//! and metrics. Tests build the same thing with port 0 and drive it step by step.

use crate::coalesce::{Coalescer, Covered};
use crate::handlers::{ChangeHandler, SyncRequestHandler};
use crate::lease::RedisState;
use crate::metrics::Metrics;
use crate::round::Rounds;
use crate::settings::Settings;
use actix_web::dev::Server;
use actix_web::{App, HttpResponse, HttpServer, web};
use cardsync_bus::{Consumer, Publisher, Topology, names};
use cardsync_graph::GraphClient;
use cardsync_proto as proto;
use cardsync_store::connections::SealingKey;
use cardsync_telemetry::metrics::Registry;
use secrecy::ExposeSecret as _;
use std::net::TcpListener;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Why the delta-worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The listen address could not be bound.
    #[error("cannot listen on the configured address")]
    Bind(#[source] std::io::Error),
    /// The database is unusable.
    #[error("cannot set up the database")]
    Store(#[from] cardsync_store::StoreError),
    /// Redis settings are unusable.
    #[error("cannot set up redis")]
    Redis(#[from] redis::RedisError),
    /// The Graph client could not be built.
    #[error("cannot build the graph client")]
    Graph(#[from] cardsync_graph::GraphError),
    /// The credential key is unusable.
    #[error("cannot use the credential key")]
    Seal(#[from] cardsync_store::connections::SealError),
    /// Metrics could not be registered.
    #[error("cannot register metrics")]
    Metrics(#[from] cardsync_telemetry::metrics::MetricsError),
}

/// A built, not yet running delta-worker.
pub struct Application {
    port: u16,
    server: Server,
    coalescer: Coalescer,
    changes: Arc<Consumer>,
    requests: Arc<Consumer>,
    settings: Settings,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Wires every part; RabbitMQ and PostgreSQL connect lazily, Redis lazily too.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let registry = Registry::new();
        let metrics = Metrics::register(&registry)?;
        let pool = cardsync_store::pool_lazy(&settings.postgres)?;
        let redis_client = redis::Client::open(settings.redis.url.expose_secret())?;
        let redis = redis::aio::ConnectionManager::new_lazy_with_config(
            redis_client,
            redis::aio::ConnectionManagerConfig::new(),
        )?;
        let topology = Topology::cardsync(&settings.topology.prefix);
        let rounds = Arc::new(Rounds {
            pool: pool.clone(),
            graph: GraphClient::new(settings.graph.clone())?,
            publisher: Publisher::lazy(&settings.bus, topology.clone()),
            redis: RedisState::new(redis.clone(), &settings.redis.key_prefix),
            sealing: Arc::new(SealingKey::from_base64(&settings.secrets.credential_key)?),
            settings: settings.worker.clone(),
            metrics,
            cards_exchange: topology.name(names::CARDS),
        });
        let coalescer = Coalescer::new(rounds);
        let changes = Arc::new(Consumer::new(
            settings.bus.clone(),
            topology.clone(),
            names::DELTA_WORKER_CHANGES,
        ));
        let requests = Arc::new(Consumer::new(
            settings.bus.clone(),
            topology,
            names::DELTA_WORKER_REQUESTS,
        ));

        let listener = TcpListener::bind(settings.http.listen).map_err(StartupError::Bind)?;
        let port = listener.local_addr().map_err(StartupError::Bind)?.port();
        let state = web::Data::new(Health {
            pool,
            redis,
            registry,
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .route(
                    "/health/live",
                    web::get().to(|| async {
                        HttpResponse::Ok().json(serde_json::json!({"status": "live"}))
                    }),
                )
                .route("/health/ready", web::get().to(ready))
                .route("/metrics", web::get().to(metrics_text))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .map_err(StartupError::Bind)?
        .run();
        Ok(Self {
            port,
            server,
            coalescer,
            changes,
            requests,
            settings,
        })
    }

    /// The health/metrics port.
    pub fn port(&self) -> u16 {
        self.port
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
        ChangeHandler {
            coalescer: self.coalescer.clone(),
        }
    }

    /// The handler of sync requests.
    pub fn request_handler(&self) -> SyncRequestHandler {
        SyncRequestHandler {
            coalescer: self.coalescer.clone(),
        }
    }

    /// Runs consumers, the safety poll and the HTTP server until `shutdown`; consumers drain
    /// in-flight work (their rounds) before returning.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let handle = self.server.handle();
        let changes = {
            let (consumer, handler, token) = (
                self.changes.clone(),
                Arc::new(self.change_handler()),
                shutdown.clone(),
            );
            tokio::spawn(async move { consumer.run(handler, token).await })
        };
        let requests = {
            let (consumer, handler, token) = (
                self.requests.clone(),
                Arc::new(self.request_handler()),
                shutdown.clone(),
            );
            tokio::spawn(async move { consumer.run(handler, token).await })
        };
        let poll = tokio::spawn(safety_poll(
            self.coalescer.clone(),
            self.settings.clone(),
            shutdown.clone(),
        ));
        let stopper = tokio::spawn(async move {
            shutdown.cancelled().await;
            // Health and metrics requests are instant: do not wait for idle keep-alive clients.
            handle.stop(false).await;
        });
        let result = self.server.await;
        for task in [changes, requests] {
            if let Ok(Err(error)) = task.await {
                tracing::error!(error = %cardsync_bus::error_chain(&error), "consumer stopped with an error");
            }
        }
        poll.abort();
        stopper.abort();
        self.coalescer.rounds().publisher.close().await;
        result
    }
}

/// Every `safety_poll_tick`, starts a round for each tenant idle longer than
/// `safety_poll_interval`: Graph never says when user notifications were lost.
///
/// The first sweep comes one tick after start, not at once: a tenant that never had a round
/// counts as idle, and a sweep at start would race whatever the operator or the notifications
/// start for it (a new tenant's initial sync, a request made just after a deploy), and would
/// have every replica of a rolling deploy sweep all tenants together.
async fn safety_poll(coalescer: Coalescer, settings: Settings, shutdown: CancellationToken) {
    let tick = settings.worker.safety_poll_tick;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let idle = match cardsync_store::directory::idle_tenants(
            &coalescer.rounds().pool,
            settings.worker.safety_poll_interval,
        )
        .await
        {
            Ok(idle) => idle,
            Err(error) => {
                tracing::warn!(error = %cardsync_bus::error_chain(&error), "safety poll cannot list tenants");
                continue;
            }
        };
        for tenant in idle {
            let coalescer = coalescer.clone();
            tokio::spawn(async move {
                if let Covered::Failed { reason, .. } = coalescer
                    .covered(tenant, proto::Cause::SafetyPoll, None)
                    .await
                {
                    tracing::warn!(%tenant, error = %reason, "safety poll round failed");
                }
            });
        }
    }
}

struct Health {
    pool: sqlx::PgPool,
    redis: redis::aio::ConnectionManager,
    registry: Registry,
}

async fn ready(state: web::Data<Health>) -> HttpResponse {
    let database = cardsync_store::ping(&state.pool).await;
    let mut redis = state.redis.clone();
    let cache = redis::cmd("PING")
        .query_async::<String>(&mut redis)
        .await
        .is_ok();
    let body = serde_json::json!({"database": database, "redis": cache});
    if database && cache {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn metrics_text(state: web::Data<Health>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(cardsync_telemetry::metrics::render(&state.registry))
}
