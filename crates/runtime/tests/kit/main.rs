//! The service kit against real sockets and a real PostgreSQL: the HTTP server's in-flight
//! count and drain, readiness, and the migration policy's schema gate.

mod http;
mod limits;
mod schema;

use actix_web::web;
use cardsync_config::HttpSettings;
use cardsync_runtime::{HttpMetrics, HttpServer, Observability, Readiness};
use cardsync_telemetry::metrics::Registry;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A kit server on port 0 (one worker, header and body timeouts of 1 s) with a `/slow` route
/// that takes `slow` to answer, a `/crash` route whose request never finishes and a `POST
/// /echo` route answering its body.
#[derive(Debug)]
pub struct Running {
    pub address: String,
    pub registry: Registry,
    pub shutdown: CancellationToken,
    pub server: tokio::task::JoinHandle<std::io::Result<()>>,
}

pub fn http_settings(shutdown_timeout: Duration) -> HttpSettings {
    HttpSettings {
        listen: "127.0.0.1:0".parse().expect("a socket address"),
        body_limit_bytes: 1024,
        shutdown_timeout,
        workers: Some(1),
        max_connections: 100,
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
    }
}

pub fn start(readiness: Readiness, shutdown_timeout: Duration, slow: Duration) -> Running {
    cardsync_testkit::init();
    let registry = Registry::new();
    let metrics = HttpMetrics::register(&registry, "cardsync_kit").expect("metrics register");
    let server = HttpServer::bind(
        &http_settings(shutdown_timeout),
        Observability {
            registry: registry.clone(),
            metrics,
            readiness,
        },
        move |config: &mut web::ServiceConfig| {
            config
                .route(
                    "/slow",
                    web::get().to(move || async move {
                        tokio::time::sleep(slow).await;
                        "done"
                    }),
                )
                .route("/crash", web::get().to(crash))
                .route(
                    "/echo",
                    web::post().to(|body: web::Bytes| async move { body }),
                );
        },
    )
    .expect("binds port 0");
    let address = format!("http://127.0.0.1:{}", server.port());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(server.run_until(shutdown.clone()));
    Running {
        address,
        registry,
        shutdown,
        server,
    }
}

/// A handler whose future ends half-way without finishing: the request is cancelled, not
/// answered (a panic unwinds through it, as a cancelled future is dropped).
async fn crash() -> &'static str {
    tokio::time::sleep(Duration::from_millis(200)).await;
    panic!("the handler gives up half-way");
}

impl Running {
    /// `GET path` on the server.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        reqwest::get(format!("{}{path}", self.address))
            .await
            .expect("the server answers")
    }

    /// The in-flight gauge as the registry holds it (not through `/metrics`, which would count
    /// itself).
    pub fn in_flight(&self) -> i64 {
        self.registry
            .gather()
            .iter()
            .find(|family| family.name() == "cardsync_kit_http_requests_in_flight")
            .map(|family| family.get_metric()[0].get_gauge().get_value() as i64)
            .expect("the in-flight gauge is registered")
    }

    /// Waits until the in-flight gauge reads `value`, failing after `within`.
    pub async fn wait_in_flight(&self, value: i64, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.in_flight() != value {
            assert!(
                tokio::time::Instant::now() < deadline,
                "in flight stayed at {} (expected {value})",
                self.in_flight()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
