//! The HTTP server every service runs: bound from [`HttpSettings`] (port 0 in tests), request
//! metrics, `/health/live`, `/health/ready`, `/metrics`, and a graceful drain under a deadline
//! on shutdown. A service adds its own routes and state through one `configure` closure.
//!
//! What a client may take is bounded: connections per worker (`http.max_connections`), the time
//! to send a request head (`http.header_timeout`) and a body (`http.body_timeout`), and the
//! body's size (`http.body_limit_bytes`).

use crate::deadline;
use crate::health::{self, Readiness};
use actix_web::dev::{Server, ServerHandle, Service as _, ServiceRequest};
use actix_web::{App, HttpResponse, web};
use cardsync_config::HttpSettings;
use cardsync_telemetry::metrics::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, LATENCY_BUCKETS, MetricsError, Opts,
    Registry, register,
};
use std::net::TcpListener;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Why the HTTP server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The listen address could not be bound.
    #[error("cannot listen on {address}")]
    Bind {
        /// The configured address.
        address: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The request metrics could not be registered.
    #[error("cannot register the HTTP metrics")]
    Metrics(#[from] MetricsError),
}

/// Request metrics: `{prefix}_http_requests_total{route,status}`,
/// `{prefix}_http_request_duration_seconds{route,status}` and `{prefix}_http_requests_in_flight`.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGauge,
}

impl HttpMetrics {
    /// Registers the three families on `registry`, named after the service (`cardsync_webhook`).
    pub fn register(registry: &Registry, prefix: &str) -> Result<Self, MetricsError> {
        Ok(Self {
            requests: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        format!("{prefix}_http_requests_total"),
                        "HTTP requests by route and status",
                    ),
                    &["route", "status"],
                )?,
            )?,
            duration: register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        format!("{prefix}_http_request_duration_seconds"),
                        "HTTP request latency",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["route", "status"],
                )?,
            )?,
            in_flight: register(
                registry,
                IntGauge::new(
                    format!("{prefix}_http_requests_in_flight"),
                    "HTTP requests being handled",
                )?,
            )?,
        })
    }
}

/// Counts requests being handled. A request holds an [`InFlightGuard`] for as long as its
/// future lives, so a request cancelled half-way (its client went away, or the server closed
/// its connection) is uncounted too; shutdown waits for the count to reach zero, never for a
/// gauge a dropped future forgot to lower.
#[derive(Debug, Clone)]
struct InFlight {
    count: watch::Sender<usize>,
    gauge: IntGauge,
}

impl InFlight {
    fn new(gauge: IntGauge) -> Self {
        Self {
            count: watch::Sender::new(0),
            gauge,
        }
    }

    fn enter(&self) -> InFlightGuard {
        self.count.send_modify(|count| *count += 1);
        self.gauge.inc();
        InFlightGuard(self.clone())
    }

    /// Waits until no request is in flight, or `deadline` passes; returns how many are left.
    async fn drained(&self, deadline: Duration) -> usize {
        let mut count = self.count.subscribe();
        let _ = tokio::time::timeout(deadline, count.wait_for(|n| *n == 0)).await;
        *self.count.borrow()
    }
}

/// One request in flight; dropping it (finished or cancelled) uncounts it.
struct InFlightGuard(InFlight);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0
            .count
            .send_modify(|count| *count = count.saturating_sub(1));
        self.0.gauge.dec();
    }
}

/// What the kit's routes need besides the service's own.
#[derive(Debug, Clone)]
pub struct Observability {
    /// The process's metric registry, rendered on `/metrics`.
    pub registry: Registry,
    /// Request metrics.
    pub metrics: HttpMetrics,
    /// What `/health/ready` checks.
    pub readiness: Readiness,
}

impl Observability {
    /// The kit's routes' parts: the registry rendered on `/metrics`, the request metrics
    /// registered on it, and what `/health/ready` checks.
    pub fn new(registry: Registry, metrics: HttpMetrics, readiness: Readiness) -> Self {
        Self {
            registry,
            metrics,
            readiness,
        }
    }
}

/// A bound, running (but not yet awaited) HTTP server.
pub struct HttpServer {
    port: u16,
    server: Server,
    in_flight: InFlight,
    shutdown_timeout: Duration,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("port", &self.port)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .finish_non_exhaustive()
    }
}

impl HttpServer {
    /// Binds `settings.listen` and starts serving the kit's routes plus whatever `configure`
    /// adds (routes, `app_data`). `configure` runs once per worker thread.
    pub fn bind<F>(
        settings: &HttpSettings,
        observability: Observability,
        configure: F,
    ) -> Result<Self, HttpError>
    where
        F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
    {
        let bind_error = |source| HttpError::Bind {
            address: settings.listen,
            source,
        };
        let listener = TcpListener::bind(settings.listen).map_err(bind_error)?;
        let port = listener.local_addr().map_err(bind_error)?.port();
        let in_flight = InFlight::new(observability.metrics.in_flight.clone());
        let body_limit = settings.body_limit_bytes;
        let body_timeout = settings.body_timeout;
        let counter = in_flight.clone();
        let mut server = actix_web::HttpServer::new(move || {
            let metrics = observability.metrics.clone();
            let counter = counter.clone();
            App::new()
                .app_data(web::Data::new(observability.clone()))
                .app_data(web::PayloadConfig::new(body_limit))
                .app_data(web::JsonConfig::default().limit(body_limit))
                .wrap_fn(move |request, service| {
                    let started = Instant::now();
                    let (head, payload) = request.into_parts();
                    let (payload, body_late) = deadline::with_deadline(payload, body_timeout);
                    let request = ServiceRequest::from_parts(head, payload);
                    let route = request
                        .match_pattern()
                        .unwrap_or_else(|| "unmatched".to_owned());
                    let metrics = metrics.clone();
                    let guard = counter.enter();
                    let response = service.call(request);
                    async move {
                        let response = response.await;
                        drop(guard);
                        let mut response = response?.map_into_boxed_body();
                        if body_late.get() {
                            // Whatever the handler made of the failed read: the client was too
                            // slow. The connection closes, since its body was never read whole.
                            let late = HttpResponse::RequestTimeout().json(serde_json::json!({
                                "error": "body_timeout",
                                "message": "the request body did not arrive in time",
                            }));
                            response = response.into_response(late);
                        }
                        let status = response.status().as_u16().to_string();
                        metrics.requests.with_label_values(&[&route, &status]).inc();
                        metrics
                            .duration
                            .with_label_values(&[&route, &status])
                            .observe(started.elapsed().as_secs_f64());
                        Ok(response)
                    }
                })
                .wrap(tracing_actix_web::TracingLogger::default())
                .configure(health::configure)
                .configure(configure.clone())
        })
        .disable_signals()
        .max_connections(settings.max_connections)
        .client_request_timeout(settings.header_timeout)
        .shutdown_timeout(settings.shutdown_timeout.as_secs().max(1));
        if let Some(workers) = settings.workers {
            server = server.workers(workers);
        }
        let server = server.listen(listener).map_err(bind_error)?.run();
        Ok(Self {
            port,
            server,
            in_flight,
            shutdown_timeout: settings.shutdown_timeout,
        })
    }

    /// [`HttpServer::bind`] for the usual service: one shared `state` as app data, and its
    /// `routes`.
    pub fn bind_with_state<S: Send + Sync + 'static>(
        settings: &HttpSettings,
        observability: Observability,
        state: web::Data<S>,
        routes: fn(&mut web::ServiceConfig),
    ) -> Result<Self, HttpError> {
        Self::bind(settings, observability, move |config| {
            config.app_data(state.clone());
            routes(config);
        })
    }

    /// The bound port (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle that can pause or stop the server from elsewhere.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until `shutdown` is cancelled; then stops accepting connections, lets every
    /// request already started finish within `http.shutdown_timeout`, closes what is left
    /// (idle keep-alive connections included) and returns.
    pub async fn run_until(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let handle = self.server.handle();
        let in_flight = self.in_flight.clone();
        let timeout = self.shutdown_timeout;
        let stopper = tokio::spawn(async move {
            shutdown.cancelled().await;
            tracing::info!(
                ?timeout,
                in_flight = *in_flight.count.borrow(),
                "http draining"
            );
            handle.pause().await;
            let left = in_flight.drained(timeout).await;
            if left > 0 {
                tracing::warn!(left, "http drain deadline passed; closing open requests");
            }
            handle.stop(false).await;
        });
        let result = self.server.await;
        stopper.abort();
        result
    }
}
