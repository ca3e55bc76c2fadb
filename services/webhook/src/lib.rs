//! The webhook service: answers Microsoft Graph's validation handshake, verifies each change
//! and lifecycle notification against the subscription registry, publishes the accepted ones to
//! RabbitMQ, and answers `202` only once the broker confirmed every one of them.

mod intake;
mod metrics;
mod notification;
mod registry;
mod routes;
mod settings;
mod startup;

/// The notification parser: the one surface that takes anyone's bytes, fuzzed in tests/fuzz.
pub use notification::{BatchError, ItemProblem, Notification, parse_batch};
pub use routes::{LIFECYCLE_PATH, NOTIFICATIONS_PATH};
pub use settings::Settings;
pub use startup::Application;
