//! Card events as outbox rows: built inside the transaction of the change they announce, with
//! a message id fixed at that moment (a republished event is the same event).

use cardsync_bus::{headers, routing};
use cardsync_proto::{BusMessage, CardEvent, Cause, Envelope, Message as _, card_event::Kind};
use cardsync_store::outbox::NewMessage;
use cardsync_telemetry::propagation;
use std::collections::BTreeMap;
use uuid::Uuid;

/// What one event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSpec<'a> {
    /// The tenant.
    pub tenant_id: Uuid,
    /// Why (the command's cause).
    pub cause: Cause,
    /// The message it derives from (the command's id), if any.
    pub causation_id: &'a str,
    /// What happened.
    pub kind: Kind,
    /// The card.
    pub card_id: Uuid,
    /// The directory user, if any.
    pub user_id: &'a str,
    /// The directory version applied (0 for local changes to a card no command touched).
    pub version: i64,
    /// Fields whose value changed.
    pub changed_fields: &'a [String],
}

/// The outbox row of one card event for `exchange` (the full `card-events` name), with the
/// current span's trace context.
pub fn outbox_message(spec: &EventSpec<'_>, exchange: &str) -> NewMessage {
    let tenant = spec.tenant_id.to_string();
    let mut envelope = Envelope::new(tenant.clone(), spec.cause);
    if !spec.causation_id.is_empty() {
        envelope = envelope.caused_by(spec.causation_id);
    }
    let message_id = Uuid::parse_str(&envelope.message_id).unwrap_or_else(|_| Uuid::now_v7());
    envelope.message_id = message_id.to_string();
    let event = CardEvent {
        envelope: Some(envelope),
        kind: spec.kind as i32,
        card_id: spec.card_id.to_string(),
        user_id: spec.user_id.to_owned(),
        version: u64::try_from(spec.version).unwrap_or(0),
        changed_fields: spec.changed_fields.to_vec(),
    };
    let mut header_map: BTreeMap<String, String> =
        propagation::current_trace_headers().into_iter().collect();
    header_map.insert(headers::TENANT_ID.to_owned(), tenant.clone());
    NewMessage {
        tenant_id: spec.tenant_id,
        message_id,
        exchange: exchange.to_owned(),
        routing_key: routing::card_event(spec.kind.as_str(), &tenant),
        message_type: CardEvent::TYPE.to_owned(),
        payload: event.encode_to_vec(),
        headers: header_map,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_row_carries_its_kind_tenant_and_a_fixed_message_id() {
        let tenant = Uuid::new_v4();
        let fields = vec!["name".to_owned()];
        let row = outbox_message(
            &EventSpec {
                tenant_id: tenant,
                cause: Cause::Notification,
                causation_id: "cmd-1",
                kind: Kind::Updated,
                card_id: Uuid::new_v4(),
                user_id: "u1",
                version: 7,
                changed_fields: &fields,
            },
            "card-events",
        );
        assert_eq!(row.routing_key, format!("event.updated.{tenant}"));
        let event = CardEvent::decode(row.payload.as_slice()).unwrap();
        let envelope = event.envelope.unwrap();
        assert_eq!(envelope.message_id, row.message_id.to_string());
        assert_eq!(envelope.causation_id, "cmd-1");
        assert_eq!(event.version, 7);
        assert_eq!(
            row.headers.get(headers::TENANT_ID),
            Some(&tenant.to_string())
        );
    }
}
