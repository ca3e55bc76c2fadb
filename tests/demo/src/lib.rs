//! The whole cardsync pipeline on one machine, as a library: `make demo` (the `cardsync-demo`
//! binary) and the pipeline integration tests (`tests/pipeline`) start, drive and check it
//! through the same code.
//!
//! - [`pipeline`]: [`Pipeline`] starts graph-sim and the four services as child processes, with
//!   a tenant, its connection, its card tenant and its Graph subscription (the subscription
//!   manager's); it waits for the
//!   pipeline to drain, compares the cards, kills and restarts a service, scrapes `/metrics`.
//! - [`check`]: every card against the directory mapped through the field rules.
//! - [`changes`]: the demo's random stream of directory changes.
//! - [`procs`]: the child processes and where their binaries are.
//! - [`operator`]: the admin-api and the `cardsync` CLI, as an operator configures a tenant.
//! - [`metrics`]: reading counters out of Prometheus text.
//! - [`reconcile`]: a full reconcile run asked of the reconciler, and what it found.
//! - [`drain`]: waiting until nothing is in flight for any of the pipeline's tenants.
//! - [`tenants`]: further tenants on one pipeline (shared ids and emails, a group scope).
//! - [`soak`]: `make soak`, the pipeline under a seeded schedule of faults.

pub mod changes;
pub mod check;
pub mod drain;
pub mod metrics;
pub mod operator;
pub mod otlp;
pub mod photos;
pub mod pipeline;
pub mod procs;
pub mod reconcile;
pub mod soak;
pub mod tenants;

pub use pipeline::{Database, Pipeline, PipelineConfig, Service, section};
