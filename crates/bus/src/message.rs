//! What a message looks like on the wire: AMQP properties and cardsync's headers.

use cardsync_proto::BusMessage;
use cardsync_telemetry::propagation;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};

/// Content type of every cardsync message body.
pub const CONTENT_TYPE: &str = "application/x-protobuf";
/// AMQP delivery mode "persistent": the broker writes the message to disk before confirming.
pub const PERSISTENT: u8 = 2;

/// Header names cardsync sets on messages.
pub mod headers {
    /// Tenant of the message (also in the envelope), so tools can filter without decoding.
    pub const TENANT_ID: &str = "cardsync-tenant-id";
    /// Delivery attempt this message is on; absent means 1.
    pub const ATTEMPT: &str = "cardsync-attempt";
    /// The last error, on retried and dead-lettered messages.
    pub const ERROR: &str = "cardsync-error";
    /// Why a message was dead-lettered (see [`crate::DeadLetterReason`]).
    pub const DEAD_LETTER_REASON: &str = "cardsync-dead-letter-reason";
    /// The work queue a dead-lettered or retried message came from.
    pub const SOURCE_QUEUE: &str = "cardsync-source-queue";
    /// W3C trace parent.
    pub const TRACEPARENT: &str = cardsync_telemetry::propagation::TRACEPARENT;
    /// W3C trace state.
    pub const TRACESTATE: &str = cardsync_telemetry::propagation::TRACESTATE;
}

/// One message to publish: built from a [`BusMessage`] by [`Outgoing::new`], published by
/// [`crate::Publisher::publish_all`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Full exchange name.
    pub exchange: String,
    /// Routing key, e.g. `change.<tenant>`.
    pub routing_key: String,
    /// AMQP `type`: the message's [`BusMessage::TYPE`].
    pub message_type: String,
    /// AMQP `message_id`: the envelope's message id (empty when the message has no envelope).
    pub message_id: String,
    /// Protobuf-encoded body.
    pub payload: Vec<u8>,
    /// String headers: tenant and trace context, plus anything a caller adds.
    pub headers: Vec<(String, String)>,
}

impl Outgoing {
    /// Encodes `message` for `exchange`/`routing_key`, with its type, message id, tenant header
    /// and the current span's trace context. Delivery is persistent.
    pub fn new<M: BusMessage>(exchange: &str, routing_key: &str, message: &M) -> Self {
        let envelope = message.envelope();
        let mut headers = propagation::current_trace_headers();
        if let Some(envelope) = envelope {
            headers.push((headers::TENANT_ID.to_owned(), envelope.tenant_id.clone()));
        }
        Self {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            message_type: M::TYPE.to_owned(),
            message_id: envelope.map(|e| e.message_id.clone()).unwrap_or_default(),
            payload: message.encode_to_vec(),
            headers,
        }
    }

    /// Adds a string header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The AMQP properties, or the name of the first field that does not fit AMQP's 255-byte
    /// short strings.
    pub(crate) fn properties(&self) -> Result<BasicProperties, &'static str> {
        let mut table = FieldTable::default();
        for (name, value) in &self.headers {
            let name = ShortString::try_new(name.as_str()).map_err(|_| "header name")?;
            table.insert(name, AMQPValue::LongString(value.as_str().into()));
        }
        let mut properties = BasicProperties::default()
            .with_content_type(CONTENT_TYPE.into())
            .with_delivery_mode(PERSISTENT)
            .with_type(
                ShortString::try_new(self.message_type.as_str()).map_err(|_| "message type")?,
            )
            .with_timestamp(unix_now())
            .with_headers(table);
        if !self.message_id.is_empty() {
            properties = properties.with_message_id(
                ShortString::try_new(self.message_id.as_str()).map_err(|_| "message id")?,
            );
        }
        Ok(properties)
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A header as text, whatever string type the sender used.
pub fn header_str<'a>(properties: &'a BasicProperties, name: &str) -> Option<&'a str> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(value) => std::str::from_utf8(value.as_bytes()).ok(),
        AMQPValue::ShortString(value) => Some(value.as_str()),
        _ => None,
    }
}

/// A header as an integer, whatever integer type the sender used.
pub fn header_int(properties: &BasicProperties, name: &str) -> Option<i64> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::LongString(v) => std::str::from_utf8(v.as_bytes()).ok()?.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cardsync_proto::{Cause, Envelope, GraphChange};

    #[test]
    fn an_outgoing_message_carries_type_id_tenant_and_trace() {
        let change = GraphChange {
            envelope: Some(Envelope::new("tenant-1", Cause::Notification)),
            ..Default::default()
        };
        let outgoing = Outgoing::new("x", "change.tenant-1", &change);
        let properties = outgoing.properties().unwrap();
        assert_eq!(
            properties.kind().as_ref().unwrap().as_str(),
            GraphChange::TYPE
        );
        assert_eq!(
            properties.message_id().as_ref().unwrap().as_str(),
            change.envelope.unwrap().message_id
        );
        assert_eq!(*properties.delivery_mode(), Some(PERSISTENT));
        assert_eq!(
            header_str(&properties, headers::TENANT_ID),
            Some("tenant-1")
        );
        assert!(propagation::is_valid_traceparent(
            header_str(&properties, headers::TRACEPARENT).unwrap()
        ));
    }

    #[test]
    fn an_overlong_field_is_an_error_not_a_panic() {
        let outgoing =
            Outgoing::new("x", "k", &GraphChange::default()).with_header(&"h".repeat(300), "v");
        assert_eq!(outgoing.properties().unwrap_err(), "header name");
    }
}
