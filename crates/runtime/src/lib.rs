//! The service kit: what every cardsync service does around its own work, written once.
//!
//! - [`Service`]: the binary's `main`: `serve` (the default), `migrate` and the service's
//!   one-shot [`Task`]s (a CronJob's command), settings loaded
//!   and validated once (exit code 2 with every problem listed), the rustls provider,
//!   telemetry, SIGTERM as a [`CancellationToken`](tokio_util::sync::CancellationToken).
//! - [`HttpServer`]: bound from `[http]`, request metrics, `/health/live`, `/health/ready`
//!   (the service's [`Readiness`] checks and the schema gate), `/metrics`, and a drain under
//!   `http.shutdown_timeout` on shutdown.
//! - [`SchemaGate`]: the migration policy (services never migrate; see [`schema`]).
//! - [`Problem`]: RFC 9457 problem bodies, the one shape of an API's refusals.
//! - [`DEFAULT_PORTS`]: every service's default listen port, in one table.
//!
//! A service's `main.rs` is one call to [`Service::run`]; its `startup.rs` only wires its parts.

mod deadline;
pub mod health;
pub mod http;
mod ports;
pub mod problem;
pub mod schema;
mod service;
mod signal;

pub use deadline::is_body_timeout;
pub use health::{Readiness, Verdict};
pub use http::{HttpError, HttpMetrics, HttpServer, Observability};
pub use ports::{DEFAULT_PORTS, default_port};
pub use problem::Problem;
pub use schema::SchemaGate;
pub use service::{
    EXIT_INVALID_CONFIGURATION, Service, ServiceSettings, StartupError, Task, Work, load_settings,
    migrate,
};
pub use signal::cancel_on_signal;
