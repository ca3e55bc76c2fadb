//! The delta-worker against graph-sim, with real PostgreSQL, Redis and RabbitMQ: rounds are
//! driven directly (no sleeps) and their card commands read back from the card-writer queues.
#![allow(
    clippy::unwrap_used,
    reason = "test set-up helpers fail the test by panicking"
)]

mod checks;
mod health;
mod lease;
mod rounds;
mod support;
