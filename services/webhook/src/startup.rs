//! Builds the webhook from settings and runs it until shutdown. Tests use the same path with
//! port 0, so they exercise the real server.

use crate::intake::Intake;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::routes::{self, AppState};
use crate::settings::Settings;
use actix_web::dev::{Server, ServerHandle, Service as _};
use actix_web::{App, HttpServer, web};
use cardsync_bus::{Publisher, Topology};
use cardsync_telemetry::metrics::IntGauge;
use std::net::TcpListener;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A bound, not yet running webhook.
pub struct Application {
    port: u16,
    server: Server,
    registry: Arc<Registry>,
    publisher: Publisher,
    in_flight: IntGauge,
    shutdown_timeout: std::time::Duration,
}

/// Why the webhook could not start.
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
    /// Binds the listener and wires every part. Does not need RabbitMQ or PostgreSQL to be up:
    /// both connect lazily, so the service starts, reports not-ready, and answers 503 until they are.
    pub async fn build(settings: &Settings) -> Result<Self, StartupError> {
        let prometheus = cardsync_telemetry::metrics::Registry::new();
        let metrics = Metrics::register(&prometheus)?;
        let metrics_in_flight = metrics.http_in_flight.clone();
        let pool = cardsync_store::pool_lazy(&settings.postgres)?;
        let registry = Arc::new(Registry::new(pool, settings.registry.clone()));
        let topology = Topology::cardsync(&settings.topology.prefix);
        let exchange = format!("{}graph", settings.topology.prefix);
        let publisher = Publisher::lazy(&settings.bus, topology);
        let intake = Intake::new(
            registry.clone(),
            publisher.clone(),
            metrics.clone(),
            exchange,
        );

        let state = web::Data::new(AppState {
            intake,
            registry: registry.clone(),
            publisher: publisher.clone(),
            prometheus,
            body_limit: settings.http.body_limit_bytes,
            token_limit: settings.webhook.validation_token_max_bytes,
            retry_after_seconds: settings.webhook.retry_after_seconds,
        });

        let listener = TcpListener::bind(settings.http.listen).map_err(StartupError::Bind)?;
        let port = listener.local_addr().map_err(StartupError::Bind)?.port();
        let server = HttpServer::new(move || {
            let http_metrics = metrics.clone();
            App::new()
                .app_data(state.clone())
                .wrap_fn(move |request, service| {
                    let started = std::time::Instant::now();
                    let route = request
                        .match_pattern()
                        .unwrap_or_else(|| "unmatched".to_owned());
                    let metrics = http_metrics.clone();
                    let in_flight = InFlight::enter(&metrics.http_in_flight);
                    let response = service.call(request);
                    async move {
                        let response = response.await;
                        drop(in_flight);
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
        .shutdown_timeout(settings.webhook.shutdown_timeout.as_secs().max(1))
        .listen(listener)
        .map_err(StartupError::Bind)?
        .run();

        let in_flight = metrics_in_flight;
        Ok(Self {
            port,
            server,
            registry,
            publisher,
            in_flight,
            shutdown_timeout: settings.webhook.shutdown_timeout,
        })
    }

    /// The bound port (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle that can stop the server from elsewhere.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, lets in-flight requests
    /// finish within the shutdown timeout, and returns.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        if let Err(error) = self.registry.reload().await {
            tracing::warn!(error = %crate::registry::error_chain(&error), "registry not loaded at start; loading on demand");
        }
        let refresher = self.registry.clone().spawn_refresher(shutdown.clone());
        let warm_up = tokio::spawn(connect_until_ready(
            self.publisher.clone(),
            shutdown.clone(),
        ));
        let handle = self.server.handle();
        let timeout = self.shutdown_timeout;
        let in_flight = self.in_flight.clone();
        let stopper = tokio::spawn(async move {
            shutdown.cancelled().await;
            tracing::info!(
                ?timeout,
                in_flight = in_flight.get(),
                "shutting down; draining in-flight requests"
            );
            // Stop accepting connections, let every request that has started finish, then stop.
            handle.pause().await;
            let deadline = tokio::time::Instant::now() + timeout;
            while in_flight.get() > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            // Every started request is done (or the deadline passed): close what is left, idle
            // keep-alive connections included, instead of waiting for clients to hang up.
            handle.stop(false).await;
        });
        let result = self.server.await;
        stopper.abort();
        refresher.abort();
        warm_up.abort();
        self.publisher.close().await;
        result
    }
}

/// Counts a request as in flight until dropped, even if the request future is cancelled.
struct InFlight(IntGauge);

impl InFlight {
    fn enter(gauge: &IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Connects to the broker (declaring the topology) before the first notification needs it, so
/// the first request does not pay for topology declaration inside Graph's 3 s window.
async fn connect_until_ready(publisher: Publisher, shutdown: CancellationToken) {
    let mut delay = std::time::Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        if publisher.is_ready().await {
            tracing::info!("broker connected and topology declared");
            return;
        }
        tracing::warn!(retry_in = ?delay, "broker not reachable yet");
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(std::time::Duration::from_secs(5));
    }
}
