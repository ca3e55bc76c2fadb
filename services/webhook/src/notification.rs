//! Parsing of Graph notification POST bodies (`{"value":[…]}`) into typed items.
//!
//! Pure and total: any byte string yields either a batch error (the body is not a
//! notification collection at all → `400`) or one result per item. A malformed item does not
//! spoil its neighbours, because one POST can mix subscriptions and tenants and Graph would
//! otherwise redeliver the good items along with the bad one for hours.

use serde::Deserialize;
use serde_json::Value;
use std::fmt;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

/// The clientState a notification carries; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientState(String);

impl ClientState {
    /// The raw value, for hashing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientState(<redacted>)")
    }
}

/// Graph's `changeType` (users and groups only ever send `updated` and `deleted`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    /// `created`.
    Created,
    /// `updated` (also sent for user creation and soft deletion).
    Updated,
    /// `deleted` (permanent deletion).
    Deleted,
    /// A value this version does not know (e.g. `unknownFutureValue`); still a trigger to run delta.
    Other,
}

/// Graph's `lifecycleEvent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleKind {
    /// `reauthorizationRequired`.
    ReauthorizationRequired,
    /// `subscriptionRemoved`.
    SubscriptionRemoved,
    /// `missed`.
    Missed,
    /// A value this version does not know.
    Other,
}

/// Fields shared by change and lifecycle notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The subscription the notification claims to belong to.
    pub subscription_id: Uuid,
    /// The tenant the notification claims to come from.
    pub tenant_id: Uuid,
    /// The echoed clientState, if any.
    pub client_state: Option<ClientState>,
    /// When the subscription expires, as Graph reports it.
    pub subscription_expires_at: Option<OffsetDateTime>,
}

/// A change notification: a trigger to run delta, not data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Who sent it.
    pub origin: Origin,
    /// What kind of change.
    pub change_type: ChangeType,
    /// Resource path, e.g. `Users/<id>`.
    pub resource: String,
    /// `resourceData.id`.
    pub resource_id: Option<String>,
    /// `resourceData.@odata.type`.
    pub resource_type: Option<String>,
}

/// A lifecycle notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifecycle {
    /// Who sent it.
    pub origin: Origin,
    /// Which event.
    pub kind: LifecycleKind,
}

/// One item of a notification collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    /// A change notification.
    Change(Change),
    /// A lifecycle notification.
    Lifecycle(Lifecycle),
}

impl Notification {
    /// The kind's stable name (`change`, `lifecycle`), a metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Notification::Change(_) => "change",
            Notification::Lifecycle(_) => "lifecycle",
        }
    }

    /// The subscription, tenant and clientState it claims.
    pub fn origin(&self) -> &Origin {
        match self {
            Notification::Change(c) => &c.origin,
            Notification::Lifecycle(l) => &l.origin,
        }
    }
}

/// Why a whole body is not a notification collection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Not JSON at all.
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    /// JSON, but not an object with a `value` array.
    #[error("body must be an object with a \"value\" array of notifications")]
    NotACollection,
}

/// Why one item was not accepted as a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ItemProblem {
    /// The item is not a JSON object.
    #[error("notification is not an object")]
    NotAnObject,
    /// A required field is absent.
    #[error("missing field {0}")]
    Missing(&'static str),
    /// A field has the wrong type or format.
    #[error("invalid field {0}")]
    Invalid(&'static str),
    /// Neither `changeType` nor `lifecycleEvent`, or both.
    #[error("exactly one of changeType and lifecycleEvent must be present")]
    AmbiguousKind,
}

#[derive(Deserialize)]
struct Collection {
    value: Vec<Value>,
}

/// Parses a notification POST body.
pub fn parse_batch(body: &[u8]) -> Result<Vec<Result<Notification, ItemProblem>>, BatchError> {
    let root: Value =
        serde_json::from_slice(body).map_err(|e| BatchError::NotJson(e.to_string()))?;
    // serde reads a struct from an array too ([[…]] would pass as {"value": […]}); Graph's
    // collection is an object, and nothing else is one (found by fuzzing).
    if !root.is_object() {
        return Err(BatchError::NotACollection);
    }
    let collection: Collection =
        serde_json::from_value(root).map_err(|_| BatchError::NotACollection)?;
    Ok(collection.value.iter().map(parse_item).collect())
}

fn parse_item(item: &Value) -> Result<Notification, ItemProblem> {
    let object = item.as_object().ok_or(ItemProblem::NotAnObject)?;
    let text = |key: &'static str| -> Result<Option<&str>, ItemProblem> {
        match object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(ItemProblem::Invalid(key)),
        }
    };
    let guid = |key: &'static str| -> Result<Uuid, ItemProblem> {
        let raw = text(key)?.ok_or(ItemProblem::Missing(key))?;
        Uuid::parse_str(raw).map_err(|_| ItemProblem::Invalid(key))
    };

    let origin = Origin {
        subscription_id: guid("subscriptionId")?,
        tenant_id: guid("tenantId")?,
        client_state: text("clientState")?.map(|s| ClientState(s.to_owned())),
        // Informational only: an unreadable expiry must not cost us the trigger.
        subscription_expires_at: text("subscriptionExpirationDateTime")?
            .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok()),
    };

    match (text("changeType")?, text("lifecycleEvent")?) {
        (Some(change), None) => {
            let data = match object.get("resourceData") {
                None | Some(Value::Null) => None,
                Some(Value::Object(data)) => Some(data),
                Some(_) => return Err(ItemProblem::Invalid("resourceData")),
            };
            let data_text = |key: &str| {
                data.and_then(|d| d.get(key))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            Ok(Notification::Change(Change {
                origin,
                change_type: match change {
                    "created" => ChangeType::Created,
                    "updated" => ChangeType::Updated,
                    "deleted" => ChangeType::Deleted,
                    _ => ChangeType::Other,
                },
                resource: text("resource")?.unwrap_or_default().to_owned(),
                resource_id: data_text("id"),
                resource_type: data_text("@odata.type"),
            }))
        }
        (None, Some(event)) => Ok(Notification::Lifecycle(Lifecycle {
            origin,
            kind: match event {
                "reauthorizationRequired" => LifecycleKind::ReauthorizationRequired,
                "subscriptionRemoved" => LifecycleKind::SubscriptionRemoved,
                "missed" => LifecycleKind::Missed,
                _ => LifecycleKind::Other,
            },
        })),
        _ => Err(ItemProblem::AmbiguousKind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SUB: &str = "7f105c7d-2dc5-4530-97cd-4e7ae6534c07";
    const TENANT: &str = "84bd8158-6d4d-4958-8b9f-9d6445542f95";

    /// The shape of Graph's documented user notification (Event Grid sample, graph-facts §2.1).
    fn documented_user_notification() -> String {
        format!(
            r##"{{"value":[{{
                "subscriptionId":"{SUB}",
                "subscriptionExpirationDateTime":"2026-11-22T18:23:45.9356913Z",
                "changeType":"updated",
                "resource":"Users/f1b0a2a4-5f3e-4d1f-9e0b-3c2d1e0f9a8b",
                "resourceData":{{
                    "@odata.type":"#Microsoft.Graph.User",
                    "@odata.id":"Users/f1b0a2a4-5f3e-4d1f-9e0b-3c2d1e0f9a8b",
                    "id":"f1b0a2a4-5f3e-4d1f-9e0b-3c2d1e0f9a8b",
                    "organizationId":"{TENANT}",
                    "eventTime":"2026-11-22T10:00:00Z",
                    "sequenceNumber":17
                }},
                "clientState":"s3cret",
                "tenantId":"{TENANT}"
            }}]}}"##
        )
    }

    #[test]
    fn a_documented_user_notification_parses_field_for_field() {
        let items = parse_batch(documented_user_notification().as_bytes()).unwrap();
        let Ok(Notification::Change(change)) = &items[0] else {
            panic!("{items:?}")
        };
        assert_eq!(change.origin.subscription_id.to_string(), SUB);
        assert_eq!(change.origin.tenant_id.to_string(), TENANT);
        assert_eq!(
            change.origin.client_state.as_ref().unwrap().expose(),
            "s3cret"
        );
        assert_eq!(change.change_type, ChangeType::Updated);
        assert_eq!(
            change.resource_id.as_deref(),
            Some("f1b0a2a4-5f3e-4d1f-9e0b-3c2d1e0f9a8b")
        );
        assert_eq!(
            change.resource_type.as_deref(),
            Some("#Microsoft.Graph.User")
        );
        let expires = change.origin.subscription_expires_at.unwrap();
        assert_eq!(
            (expires.year(), expires.hour(), expires.nanosecond()),
            (2026, 18, 935_691_300)
        );
    }

    #[test]
    fn a_lifecycle_notification_without_resource_parses() {
        let body = format!(
            r#"{{"value":[{{"subscriptionId":"{SUB}","subscriptionExpirationDateTime":"2026-11-22T18:23:45Z","tenantId":"{TENANT}","clientState":"c","lifecycleEvent":"reauthorizationRequired"}}]}}"#
        );
        let items = parse_batch(body.as_bytes()).unwrap();
        assert!(
            matches!(&items[0], Ok(Notification::Lifecycle(l)) if l.kind == LifecycleKind::ReauthorizationRequired)
        );
    }

    #[test]
    fn a_bad_item_does_not_spoil_its_neighbours() {
        let body = format!(
            r#"{{"value":[42, {{"subscriptionId":"nope","tenantId":"{TENANT}","changeType":"updated"}},
                {{"subscriptionId":"{SUB}","tenantId":"{TENANT}"}},
                {{"subscriptionId":"{SUB}","tenantId":"{TENANT}","changeType":"updated","lifecycleEvent":"missed"}},
                {{"subscriptionId":"{SUB}","tenantId":"{TENANT}","changeType":"deleted"}}]}}"#
        );
        let items = parse_batch(body.as_bytes()).unwrap();
        assert_eq!(items[0], Err(ItemProblem::NotAnObject));
        assert_eq!(items[1], Err(ItemProblem::Invalid("subscriptionId")));
        assert_eq!(items[2], Err(ItemProblem::AmbiguousKind));
        assert_eq!(items[3], Err(ItemProblem::AmbiguousKind));
        assert!(
            matches!(&items[4], Ok(Notification::Change(c)) if c.change_type == ChangeType::Deleted)
        );
    }

    #[test]
    fn unknown_change_types_are_still_triggers() {
        let body = format!(
            r#"{{"value":[{{"subscriptionId":"{SUB}","tenantId":"{TENANT}","changeType":"unknownFutureValue"}}]}}"#
        );
        let items = parse_batch(body.as_bytes()).unwrap();
        assert!(
            matches!(&items[0], Ok(Notification::Change(c)) if c.change_type == ChangeType::Other)
        );
    }

    #[test]
    fn bodies_that_are_not_collections_are_batch_errors() {
        assert!(matches!(parse_batch(b"{"), Err(BatchError::NotJson(_))));
        assert_eq!(parse_batch(b"[]"), Err(BatchError::NotACollection));
        assert_eq!(
            parse_batch(br#"{"value":{}}"#),
            Err(BatchError::NotACollection)
        );
        assert_eq!(
            parse_batch(br#"{"values":[]}"#),
            Err(BatchError::NotACollection)
        );
        assert_eq!(parse_batch(br#"{"value":[]}"#), Ok(vec![]));
    }

    #[test]
    fn an_array_is_not_a_collection_even_when_serde_would_read_one_from_it() {
        assert_eq!(parse_batch(br#"[[]]"#), Err(BatchError::NotACollection));
        let wrapped = format!("[[{}]]", documented_user_notification());
        assert_eq!(
            parse_batch(wrapped.as_bytes()),
            Err(BatchError::NotACollection)
        );
    }

    #[test]
    fn client_state_never_prints() {
        let items = parse_batch(documented_user_notification().as_bytes()).unwrap();
        assert!(!format!("{items:?}").contains("s3cret"));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_batch(&bytes);
        }

        #[test]
        fn arbitrary_json_items_never_panic(
            keys in proptest::collection::vec(
                prop_oneof![
                    Just("subscriptionId".to_owned()), Just("tenantId".to_owned()), Just("clientState".to_owned()),
                    Just("changeType".to_owned()), Just("lifecycleEvent".to_owned()), Just("resource".to_owned()),
                    Just("resourceData".to_owned()), Just("subscriptionExpirationDateTime".to_owned()), "[a-z]{1,8}"
                ], 0..8),
            values in proptest::collection::vec(
                prop_oneof![
                    Just(serde_json::json!(SUB)), Just(serde_json::json!(TENANT)), Just(serde_json::json!(null)),
                    Just(serde_json::json!("updated")), Just(serde_json::json!({"id": 1})), Just(serde_json::json!([1, "x"])),
                    any::<i64>().prop_map(|n| serde_json::json!(n)), ".{0,40}".prop_map(|s| serde_json::json!(s)),
                ], 0..8),
        ) {
            let item: serde_json::Map<String, Value> = keys.into_iter().zip(values).collect();
            let body = serde_json::to_vec(&serde_json::json!({"value": [item]})).unwrap();
            let parsed = parse_batch(&body).unwrap();
            prop_assert_eq!(parsed.len(), 1);
        }
    }
}
