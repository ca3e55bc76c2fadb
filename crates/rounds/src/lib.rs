//! The delta round of one tenant, for every service that runs rounds (the delta-worker today,
//! the reconciler next): one round per tenant at a time across replicas (a Redis lease with a
//! PostgreSQL fencing token), the directory snapshot with its per-user versions, and the passes
//! that fill it from Graph and turn its changes into confirmed card commands.
//!
//! A reconcile ([`Mode::Reconcile`]) is a full round followed by a comparison of the snapshot
//! with the cards ([`drift`]).
//!
//! [`Rounds`] is built once per process and runs [`RoundRequest`]s; scheduling them (coalescing
//! triggers, polling idle tenants) is the caller's business.

pub mod connection;
pub mod drift;
mod keeper;
pub mod lease;
pub mod metrics;
pub mod preview;
pub mod rail;
pub mod round;
pub mod select;
pub mod settings;
pub mod snapshot;
pub mod wiring;

pub use connection::graph_connection;
pub use lease::RedisState;
pub use metrics::RoundMetrics;
pub use round::{Mode, RoundError, RoundParts, RoundReport, RoundRequest, Rounds, Triggers};
pub use settings::RoundSettings;
pub use wiring::{RoundsConfig, WireError, Wired, redis_ready, wire};
