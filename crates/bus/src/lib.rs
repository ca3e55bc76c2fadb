//! RabbitMQ for cardsync: the declared topology, confirmed publishing, and the one consumer
//! runner every worker uses.
//!
//! - [`Topology`] describes exchanges and work queues (each with delayed retry queues and a
//!   dead-letter queue); [`declare`] makes the broker match it, idempotently.
//! - [`Publisher`] publishes batches of [`Outgoing`] messages with `mandatory` routing and
//!   publisher confirms; `Ok` means the broker has every message.
//! - [`Consumer`] runs a [`Handler`] over a queue: manual acks after the effect, bounded
//!   concurrency, retry/dead-letter routing decided in one place ([`decide`]), reconnects, and a
//!   graceful drain on shutdown.
//! - [`DeadLetters`] lets operators list, replay and discard what was dead-lettered.
//!
//! The topology is documented for operators in the crate's `README.md`.

mod acks;
mod backoff;
mod connection;
mod consumer;
mod dead_letters;
mod decision;
mod error;
mod message;
mod metrics;
mod publisher;
mod settings;
mod topology;

pub use consumer::{Consumer, Delivery, Handler, HandlerError, Processed, Transience};
pub use dead_letters::{DeadLetter, DeadLetters, MAX_SCAN, Settled};
pub use decision::{DeadLetterReason, Decision, Outcome, decide};
pub use error::{BusError, PublishError, Unconfirmed};
pub use message::{CONTENT_TYPE, Outgoing, PERSISTENT, header_int, header_str, headers};
pub use metrics::BusMetrics;
pub use publisher::Publisher;
pub use settings::{BusSettings, TopologySettings, deserialize_durations};
pub use topology::{
    AUDIT_MAX_LENGTH, Binding, DEFAULT_DELIVERY_LIMIT, DEFAULT_RETRY_DELAYS, LIFECYCLE_MAX_LENGTH,
    QueueLimit, QueueType, Topology, WorkQueue, declare, delete, names, routing,
};

/// The lapin version this crate is built on, re-exported so tests and tools use the same types.
pub use lapin;
