//! Wires the admin-api from settings and runs it until shutdown. Tests use the same path with
//! port 0.

use crate::routes;
use crate::settings::Settings;
use crate::state::AppState;
use actix_web::web;
use cardsync_auth::{AuthMetrics, Verifier};
use cardsync_bus::Publisher;
use cardsync_graph::GraphClient;
use cardsync_runtime::{
    HttpMetrics, HttpServer, Observability, Readiness, SchemaGate, StartupError,
};
use sqlx::PgPool;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A bound, not yet running admin-api.
#[derive(Debug)]
pub struct Application {
    http: HttpServer,
    publisher: Publisher,
    pool: PgPool,
}

impl Application {
    /// Binds the listener and wires every part. PostgreSQL, RabbitMQ and the token issuer are
    /// reached lazily: the API reports not-ready until the database answers with a current
    /// schema and the broker is reachable.
    pub async fn build(settings: &Settings) -> Result<Self, StartupError> {
        let prometheus = cardsync_telemetry::metrics::Registry::new();
        let http_metrics = HttpMetrics::register(&prometheus, "cardsync_admin_api")?;
        let auth_metrics =
            web::Data::new(AuthMetrics::register(&prometheus, "cardsync_admin_api")?);
        let pool = cardsync_store::pool_lazy(&settings.postgres)?;
        let topology = settings
            .topology
            .topology()
            .with_retry_delays(&settings.bus.retry_delays);
        let publisher = Publisher::lazy(&settings.bus, topology.clone());
        let graph = GraphClient::new(settings.graph.clone())
            .map_err(|error| StartupError::dependency("the Graph client", error))?;
        let sealing = settings
            .secrets
            .keyring()
            .map_err(|error| StartupError::dependency("the credential sealing key", error))?;
        let redis = crate::tenant_keys::TenantKeys::lazy(&settings.redis)
            .map_err(|error| StartupError::dependency("the Redis client", error))?;
        let photos = cardsync_photos::PhotoStore::open(&settings.photos)
            .map_err(|error| StartupError::dependency("the photo store", error))?;
        let verifier = Verifier::new(&settings.auth)
            .map_err(|error| StartupError::dependency("the token verifier", error))?;
        let state = web::Data::new(AppState {
            pool: pool.clone(),
            publisher: publisher.clone(),
            topology: topology.clone(),
            graph,
            sealing: Arc::new(sealing),
            admin: settings.admin.clone(),
            redis,
            dead_letters: cardsync_bus::DeadLetters::new(
                &settings.bus,
                topology.clone(),
                publisher.clone(),
            ),
            photos,
        });
        let verifier = web::Data::new(verifier);
        let schema = SchemaGate::new(pool.clone());
        let readiness = Readiness::new()
            .database(pool.clone())
            .probe("broker", publisher.clone(), |publisher| async move {
                publisher.is_ready().await
            })
            .schema(schema);
        let http = HttpServer::bind(
            &settings.http,
            Observability::new(prometheus, http_metrics, readiness),
            move |config| {
                config
                    .app_data(state.clone())
                    .app_data(verifier.clone())
                    .app_data(auth_metrics.clone());
                routes::configure(config);
            },
        )?;
        Ok(Self {
            http,
            publisher,
            pool,
        })
    }

    /// The bound port (useful with port 0).
    pub fn port(&self) -> u16 {
        self.http.port()
    }

    /// The database pool.
    pub fn pool(&self) -> PgPool {
        self.pool.clone()
    }

    /// Serves until `shutdown` is cancelled, then drains requests in flight and closes.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let result = self.http.run_until(shutdown).await;
        self.publisher.close().await;
        result
    }
}
