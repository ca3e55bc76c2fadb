//! Integration tests of the bus against a real RabbitMQ on 127.0.0.1:5672 (`make services`).
//! One binary on purpose: each file under `tests/` would be linked separately.

#[allow(
    clippy::unwrap_used,
    reason = "test handlers: a failed unwrap is a failed test"
)]
mod consumer;
mod publisher;
#[allow(
    clippy::unwrap_used,
    reason = "test fixtures: a failed unwrap is a failed test"
)]
mod support;
mod topology;
