//! The journal of card changes: for every change, its audit row and its card events (as outbox
//! rows), written in the transaction of the change itself. A committed change is therefore always
//! recorded and announced, and a rolled-back one never is.
//!
//! Whoever changes a card (the card-writer's commands, a local edit, the admin API) journals it
//! here, so the audit trail and the events read the same whatever made the change.

use crate::events::{EventSpec, outbox_message};
use cardsync_proto::Cause;
use cardsync_proto::card_event::Kind;
use cardsync_rules::FieldStates;
use cardsync_store::StoreError;
use cardsync_store::audit::{self, AuditEntry};
use cardsync_store::cards::Card;
use cardsync_store::outbox::{self, NewMessage};
use sqlx::PgConnection;

/// The audit cause of a change made on the card itself.
pub const LOCAL_EDIT: &str = "local_edit";

/// Where a change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    /// A card command from the directory.
    Command {
        /// The command's cause, carried on to the audit row and the events.
        cause: Cause,
        /// The command's message id: the audit row's reference and the events' causation.
        message_id: &'a str,
    },
    /// An edit made on the card (an operator, the admin API): audited as `local_edit`,
    /// announced with the cause `manual`.
    LocalEdit,
}

impl<'a> Source<'a> {
    fn audit_cause(self) -> &'static str {
        match self {
            Source::Command { cause, .. } => cause.as_str(),
            Source::LocalEdit => LOCAL_EDIT,
        }
    }

    fn event_cause(self) -> Cause {
        match self {
            Source::Command { cause, .. } => cause,
            Source::LocalEdit => Cause::Manual,
        }
    }

    /// The message the change derives from (`None` for a local edit).
    fn message_id(self) -> Option<&'a str> {
        match self {
            Source::Command { message_id, .. } => Some(message_id),
            Source::LocalEdit => None,
        }
    }
}

/// One change to journal.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// Where the change came from.
    pub source: Source<'a>,
    /// The audit row's action (`created`, `updated`, `linked`, `local_edit`, …); `None` when
    /// the change leaves no audit row (nothing on the card moved but its version).
    pub action: Option<&'a str>,
    /// The card before the change (`None`: the card is new).
    pub before: Option<&'a Card>,
    /// The card after the change.
    pub after: &'a Card,
    /// The card events the change announces, in order.
    pub events: &'a [Kind],
    /// The fields whose value changed, as the events list them.
    pub changed_fields: &'a [String],
}

/// The audit rows and outbox rows of one transaction's changes, kept until [`Journal::write`].
#[derive(Debug)]
pub struct Journal {
    exchange: String,
    audit: Vec<AuditEntry>,
    outbox: Vec<NewMessage>,
}

impl Journal {
    /// An empty journal whose events go to `exchange` (the full `card-events` name).
    pub fn new(exchange: impl Into<String>) -> Self {
        Self {
            exchange: exchange.into(),
            audit: Vec::new(),
            outbox: Vec::new(),
        }
    }

    /// Journals one change; its events carry the current span's trace context. Returns how
    /// many events it announces.
    pub fn record(&mut self, entry: &Entry<'_>) -> usize {
        let Entry {
            source,
            action,
            before,
            after,
            events,
            changed_fields,
        } = *entry;
        if let Some(action) = action {
            self.audit.push(audit_row(source, action, before, after));
        }
        for kind in events {
            self.outbox.push(outbox_message(
                &EventSpec {
                    tenant_id: after.tenant_id,
                    cause: source.event_cause(),
                    causation_id: source.message_id().unwrap_or(""),
                    kind: *kind,
                    card_id: after.card_id,
                    user_id: after.user_id.as_deref().unwrap_or(""),
                    version: after.applied_version,
                    changed_fields,
                },
                &self.exchange,
            ));
        }
        events.len()
    }

    /// The audit rows journaled so far, in order.
    pub fn audit_rows(&self) -> &[AuditEntry] {
        &self.audit
    }

    /// The outbox rows (card events) journaled so far, in order.
    pub fn outbox_rows(&self) -> &[NewMessage] {
        &self.outbox
    }

    /// Writes every row journaled, one statement per table, inside the transaction of the
    /// changes (the caller commits).
    pub async fn write(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        audit::record_all(conn, &self.audit).await?;
        outbox::enqueue_all(conn, &self.outbox).await
    }
}

/// The audit row of a change: only what changed (a new card's every field, else the fields
/// whose state moved, as they were and as they are), so an update of one field costs a line,
/// not two copies of the card.
fn audit_row(source: Source<'_>, action: &str, before: Option<&Card>, after: &Card) -> AuditEntry {
    let (fields_before, fields_after) =
        FieldStates::audited(before.map(|card| &card.fields), &after.fields);
    // A directory change is audited with the version it applied; a local edit applies none.
    let version = match source {
        Source::Command { .. } => Some(after.applied_version),
        Source::LocalEdit => None,
    };
    AuditEntry {
        tenant_id: after.tenant_id,
        card_id: after.card_id,
        action: action.to_owned(),
        cause: source.audit_cause().to_owned(),
        message_id: source.message_id().map(str::to_owned),
        version,
        status_before: before.map(|card| card.status.as_str().to_owned()),
        status_after: Some(after.status.as_str().to_owned()),
        fields_before,
        fields_after: Some(fields_after),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cardsync_proto::{CardEvent, Message as _};
    use cardsync_rules::FieldName;
    use cardsync_store::cards::CardStatus;
    use uuid::Uuid;

    fn card_with(values: &[(&str, &str)]) -> Card {
        let mut card = Card::new(Uuid::new_v4());
        card.fields = FieldStates::from_local_values(
            values
                .iter()
                .map(|(name, value)| (FieldName::new(*name), Some(*value))),
        );
        card
    }

    fn decoded(row: &NewMessage) -> CardEvent {
        CardEvent::decode(row.payload.as_slice()).expect("an encoded card event")
    }

    const COMMAND: Source<'static> = Source::Command {
        cause: Cause::Notification,
        message_id: "cmd-7",
    };

    /// A command's update of `before` into `after`, announced as `updated`.
    fn update<'a>(before: &'a Card, after: &'a Card, changed: &'a [String]) -> Entry<'a> {
        Entry {
            source: COMMAND,
            action: Some("updated"),
            before: Some(before),
            after,
            events: &[Kind::Updated],
            changed_fields: changed,
        }
    }

    #[test]
    fn a_command_change_is_audited_with_its_cause_message_and_version() {
        let before = card_with(&[("name", "Ann")]);
        let mut after = before.with_fields(card_with(&[("name", "Ann Lee")]).fields);
        after.user_id = Some("u1".into());
        after.applied_version = 7;
        let mut journal = Journal::new("card-events");
        journal.record(&update(&before, &after, &["name".to_owned()]));
        let [row] = journal.audit_rows() else {
            panic!("one audit row: {:?}", journal.audit_rows());
        };
        assert_eq!(row.card_id, after.card_id);
        assert_eq!(row.tenant_id, after.tenant_id);
        assert_eq!(row.action, "updated");
        assert_eq!(row.cause, "notification");
        assert_eq!(row.message_id.as_deref(), Some("cmd-7"));
        assert_eq!(row.version, Some(7));
        assert_eq!(row.status_before.as_deref(), Some("active"));
        assert_eq!(row.status_after.as_deref(), Some("active"));
    }

    #[test]
    fn a_new_card_is_audited_with_every_field_and_no_state_before() {
        let after = card_with(&[("name", "Ann"), ("email", "ann@contoso.example")]);
        let mut journal = Journal::new("card-events");
        journal.record(&Entry {
            source: COMMAND,
            action: Some("created"),
            before: None,
            after: &after,
            events: &[Kind::Created],
            changed_fields: &after.fields.filled_names(),
        });
        let row = &journal.audit_rows()[0];
        assert_eq!(row.status_before, None);
        assert_eq!(row.fields_before, None);
        assert_eq!(row.fields_after.as_ref(), Some(&after.fields));
    }

    #[test]
    fn an_update_is_audited_with_only_the_fields_that_changed() {
        let before = card_with(&[("name", "Ann"), ("company", "Contoso")]);
        let after =
            before.with_fields(card_with(&[("name", "Ann Lee"), ("company", "Contoso")]).fields);
        let mut journal = Journal::new("card-events");
        journal.record(&update(&before, &after, &["name".to_owned()]));
        let row = &journal.audit_rows()[0];
        let names = |states: Option<&FieldStates>| states.map(FieldStates::filled_names);
        assert_eq!(
            names(row.fields_before.as_ref()),
            Some(vec!["name".to_owned()])
        );
        assert_eq!(
            names(row.fields_after.as_ref()),
            Some(vec!["name".to_owned()])
        );
        assert_eq!(
            row.fields_after
                .as_ref()
                .and_then(|states| states.value("name")),
            Some("Ann Lee")
        );
    }

    #[test]
    fn a_change_without_an_action_leaves_no_audit_row() {
        let card = card_with(&[("name", "Ann")]);
        let mut journal = Journal::new("card-events");
        let events = journal.record(&Entry {
            source: COMMAND,
            action: None,
            before: None,
            after: &card,
            events: &[],
            changed_fields: &[],
        });
        assert_eq!(events, 0);
        assert!(journal.audit_rows().is_empty());
        assert!(journal.outbox_rows().is_empty());
    }

    #[test]
    fn each_event_names_the_card_its_user_its_version_and_the_changed_fields() {
        let mut after = card_with(&[("name", "Ann")]);
        after.user_id = Some("u1".into());
        after.applied_version = 3;
        let mut journal = Journal::new("t.card-events");
        let events = journal.record(&Entry {
            source: COMMAND,
            action: Some("created"),
            before: None,
            after: &after,
            events: &[Kind::Created, Kind::Invited],
            changed_fields: &["name".to_owned()],
        });
        assert_eq!(events, 2);
        let rows = journal.outbox_rows();
        let kinds: Vec<&str> = rows.iter().map(|row| row.routing_key.as_str()).collect();
        let tenant = after.tenant_id;
        assert_eq!(
            kinds,
            vec![
                format!("event.created.{tenant}"),
                format!("event.invited.{tenant}")
            ]
        );
        for row in rows {
            assert_eq!(row.exchange, "t.card-events");
            let event = decoded(row);
            assert_eq!(event.card_id, after.card_id.to_string());
            assert_eq!(event.user_id, "u1");
            assert_eq!(event.version, 3);
            assert_eq!(event.changed_fields, vec!["name".to_owned()]);
            let envelope = event.envelope.expect("an envelope");
            assert_eq!(envelope.causation_id, "cmd-7");
            assert_eq!(envelope.cause, Cause::Notification as i32);
        }
    }

    #[test]
    fn a_local_edit_is_audited_as_local_edit_and_announced_as_manual() {
        let before = card_with(&[("name", "Ann")]);
        let mut after = before.with_fields(card_with(&[("name", "Annie")]).fields);
        after.status = CardStatus::Active;
        let mut journal = Journal::new("card-events");
        journal.record(&Entry {
            source: Source::LocalEdit,
            action: Some("local_edit"),
            before: Some(&before),
            after: &after,
            events: &[Kind::Updated],
            changed_fields: &["name".to_owned()],
        });
        let row = &journal.audit_rows()[0];
        assert_eq!(row.cause, LOCAL_EDIT);
        assert_eq!(row.message_id, None);
        assert_eq!(row.version, None);
        let event = decoded(&journal.outbox_rows()[0]);
        assert_eq!(event.user_id, "", "a card no command linked has no user");
        let envelope = event.envelope.expect("an envelope");
        assert_eq!(envelope.cause, Cause::Manual as i32);
        assert_eq!(envelope.causation_id, "");
    }
}
