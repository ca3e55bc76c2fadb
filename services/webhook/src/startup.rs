//! Wires the webhook from settings: the registry, the publisher, the intake and the kit's HTTP
//! server. Tests use the same path with port 0, so they exercise the real server.

use crate::intake::Intake;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::routes::{self, AppState};
use crate::settings::Settings;
use actix_web::web;
use cardsync_bus::Publisher;
use cardsync_runtime::{
    HttpMetrics, HttpServer, Observability, Readiness, SchemaGate, StartupError,
};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A bound, not yet running webhook.
#[derive(Debug)]
pub struct Application {
    http: HttpServer,
    registry: Arc<Registry>,
    publisher: Publisher,
}

impl Application {
    /// Binds the listener and wires every part. Does not need RabbitMQ or PostgreSQL to be up:
    /// both connect lazily, so the service starts, reports not-ready, and answers 503 until they are.
    pub async fn build(settings: &Settings) -> Result<Self, StartupError> {
        let prometheus = cardsync_telemetry::metrics::Registry::new();
        let http_metrics = HttpMetrics::register(&prometheus, "cardsync_webhook")?;
        let metrics = Metrics::register(&prometheus)?;
        let pool = cardsync_store::pool_lazy(&settings.postgres)?;
        let registry = Arc::new(Registry::new(pool.clone(), settings.registry.clone()));
        let topology = settings.topology.topology();
        let publisher = Publisher::lazy(&settings.bus, topology.clone());
        let state = web::Data::new(AppState {
            intake: Intake::new(registry.clone(), publisher.clone(), metrics, &topology),
            body_limit: settings.http.body_limit_bytes,
            token_limit: settings.webhook.validation_token_max_bytes,
            retry_after_seconds: settings.webhook.retry_after_seconds,
        });
        let readiness = Readiness::new()
            .probe("broker", publisher.clone(), |publisher| async move {
                publisher.is_ready().await
            })
            .probe("registry", registry.clone(), |registry| async move {
                registry.is_reachable().await
            })
            .schema(SchemaGate::new(pool));
        let http = HttpServer::bind_with_state(
            &settings.http,
            Observability::new(prometheus, http_metrics, readiness),
            state,
            routes::configure,
        )?;
        Ok(Self {
            http,
            registry,
            publisher,
        })
    }

    /// The bound port (useful with port 0).
    pub fn port(&self) -> u16 {
        self.http.port()
    }

    /// Serves until `shutdown` is cancelled, then lets in-flight requests finish within
    /// `http.shutdown_timeout` and closes the broker connection.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        if let Err(error) = self.registry.reload().await {
            tracing::warn!(error = %cardsync_telemetry::error_chain(&error), "registry not loaded at start; loading on demand");
        }
        let refresher = self.registry.clone().spawn_refresher(shutdown.clone());
        let warm_up = tokio::spawn(connect_until_ready(
            self.publisher.clone(),
            shutdown.clone(),
        ));
        let result = self.http.run_until(shutdown).await;
        refresher.abort();
        warm_up.abort();
        self.publisher.close().await;
        result
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
