//! The whole pipeline end to end (issue 4 §6): graph-sim, the webhook, the delta-worker and the
//! card-writer as the real binaries, driven through `cardsync_demo::Pipeline` (the harness
//! `make demo` runs on). Each scenario changes the directory in graph-sim, provokes one kind of
//! trouble, waits for the pipeline to drain and compares every card in PostgreSQL with
//! graph-sim's directory (0 divergent, 0 duplicate), then checks the scenario's own evidence:
//! audit rows, outbox events, graph-sim's counters and delivery log, the services' metrics.
//!
//! Needs RabbitMQ, Redis and PostgreSQL on their default local ports (`make services`).
//! Each pipeline gets its own database on the `cardsync_test` server, topology prefix and Redis
//! key prefix; at most two pipelines run at once.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on what it did not expect"
)]

mod catalogue;
mod crashes;
mod delivery;
mod demo_binary;
mod directory_changes;
mod graph_trouble;
mod hostile;
mod isolation;
mod offboard;
mod photos;
mod redis_loss;
mod rules;
mod safety_rail;
mod secrets;
mod support;
mod sync_now;
mod teams;
mod traces;
