//! What can go wrong talking to RabbitMQ, named by what failed: connecting and declaring
//! ([`BusError`]) and publishing ([`PublishError`]). Messages never contain the URL.

use std::time::Duration;

/// A failure to connect, declare or operate a channel.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// TCP connect or the AMQP handshake failed (refused, bad credentials, vhost missing…).
    #[error("cannot connect to RabbitMQ")]
    Connect(#[source] lapin::Error),
    /// Connecting (handshake and topology included) took longer than `connect_timeout`.
    #[error("connecting to RabbitMQ took longer than {0:?}")]
    ConnectTimeout(Duration),
    /// The connection attempt was stopped before it ended (its runtime is shutting down).
    #[error("the connection attempt to RabbitMQ was stopped")]
    ConnectAborted,
    /// Another caller's connection attempt failed while this one waited for it.
    #[error("the connection attempt to RabbitMQ failed just now: {reason}")]
    ConnectFailedRecently {
        /// The failed attempt's error chain.
        reason: String,
    },
    /// Opening or configuring a channel failed.
    #[error("RabbitMQ channel operation {operation} failed")]
    Channel {
        /// What was attempted, e.g. `confirm.select`.
        operation: &'static str,
        /// The broker's or client's error.
        #[source]
        source: lapin::Error,
    },
    /// Declaring (or deleting) part of the topology failed.
    #[error("declaring {what} {name} failed")]
    Declare {
        /// `exchange`, `queue` or `binding`.
        what: &'static str,
        /// The full name.
        name: String,
        /// The broker's or client's error.
        #[source]
        source: lapin::Error,
    },
    /// A name or routing key longer than AMQP's 255 bytes.
    #[error("name {name:?} is longer than 255 bytes")]
    NameTooLong {
        /// The offending name.
        name: String,
    },
    /// The consumer was asked for a queue its topology does not contain.
    #[error("queue {0} is not part of the topology")]
    UnknownQueue(String),
    /// Re-publishing a message to its retry or dead-letter queue failed; the original was
    /// returned to its queue instead of being acknowledged.
    #[error("moving the message to {target} failed")]
    Republish {
        /// The retry or dead-letter queue.
        target: String,
        /// Why.
        #[source]
        source: Box<PublishError>,
    },
    /// Acknowledging a delivery failed (usually the channel is gone and the broker redelivers).
    #[error("acknowledging the delivery failed")]
    Ack(#[source] lapin::Error),
}

/// Why a batch was not (or not provably) published. Only `Ok(())` means every message is safe.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No connection to RabbitMQ could be made within `connect_timeout`.
    #[error("RabbitMQ is unreachable")]
    Unreachable(#[source] BusError),
    /// The broker did not confirm every message: nothing is known about the unconfirmed ones,
    /// so the caller must treat the whole batch as not published (and may publish it again).
    #[error("RabbitMQ did not confirm the batch")]
    Unconfirmed(#[source] Unconfirmed),
    /// No queue is bound for this routing key; the broker returned the message.
    #[error("no queue is bound for routing key {routing_key:?} on exchange {exchange:?}")]
    Unroutable {
        /// The exchange the message was published to.
        exchange: String,
        /// Its routing key.
        routing_key: String,
    },
    /// A field does not fit AMQP (e.g. a header name or routing key over 255 bytes).
    #[error("the message's {field} does not fit AMQP (over 255 bytes)")]
    InvalidMessage {
        /// Which field.
        field: &'static str,
    },
}

/// The ways a confirm can fail to arrive.
#[derive(Debug, thiserror::Error)]
pub enum Unconfirmed {
    /// The broker answered `basic.nack` (an internal error on its side).
    #[error("RabbitMQ refused {count} message(s) (nack)")]
    Nacked {
        /// How many messages of the batch were nacked.
        count: usize,
    },
    /// Not every confirm arrived within `confirm_timeout`.
    #[error("not every confirm arrived within {0:?}")]
    TimedOut(Duration),
    /// The channel or connection closed before every confirm arrived.
    #[error("the channel closed before every confirm arrived")]
    ChannelClosed(#[source] lapin::Error),
}
