//! What can go wrong talking to RabbitMQ, named by what failed. Messages never contain the URL.

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
        source: Box<crate::publisher::PublishError>,
    },
    /// Acknowledging a delivery failed (usually the channel is gone and the broker redelivers).
    #[error("acknowledging the delivery failed")]
    Ack(#[source] lapin::Error),
}

/// The full cause chain of an error on one line: `outer: inner: innermost`.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}
