//! The reconciler against graph-sim, with real PostgreSQL, Redis and RabbitMQ: requests are
//! handled step by step and the card commands read back from the card-writer queues.
#![allow(
    clippy::unwrap_used,
    reason = "test set-up helpers fail the test by panicking"
)]

mod due;
mod photos;
mod reconcile;
mod runs;
mod schedules;
mod support;
