//! The directory user: a Microsoft Graph `user` object kept as JSON, merged with Graph's delta semantics.
//!
//! Every property is kept, not only the ones the default mapping reads, so that custom field
//! expressions can reference any user property, `onPremisesExtensionAttributes.extensionAttributeN`
//! or a directory schema extension (`extension_<appid>_<name>`). OData annotations (keys containing
//! `@`, such as `@odata.type` or `@removed`) are not properties and are never stored.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Outcome of merging a delta entry into a known user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeltaEffect {
    /// At least one property was set, changed or cleared.
    Changed,
    /// The delta only repeated what was already known (a replay, or an unchanged property).
    Unchanged,
}

/// Why a JSON value cannot be used as a directory user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// The value is not a JSON object.
    #[error("a Graph user must be a JSON object, found {found}")]
    NotAnObject {
        /// The JSON type that was found instead.
        found: &'static str,
    },
    /// The object has no non-empty string `id`.
    #[error("the Graph user has no \"id\"")]
    MissingId,
    /// A delta entry names a different user than the state it is merged into.
    #[error("delta for user {delta_id} cannot be applied to user {user_id}")]
    IdMismatch {
        /// Id of the known user.
        user_id: String,
        /// Id carried by the delta entry.
        delta_id: String,
    },
}

/// A directory (Entra ID) user as Graph returns it: its object id plus every property seen so far.
///
/// Serialises as the plain Graph JSON object, so the delta-worker can keep it as its durable
/// directory snapshot and read it back with [`DirectoryUser::from_graph`] or serde.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Map<String, Value>", into = "Map<String, Value>")]
pub struct DirectoryUser {
    id: String,
    properties: Map<String, Value>,
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn is_annotation(key: &str) -> bool {
    key.contains('@')
}

fn id_of(object: &Map<String, Value>) -> Option<&str> {
    object
        .get("id")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|id| !id.is_empty())
}

impl DirectoryUser {
    /// Builds a user from a full Graph user object (a `GET /users/{id}` body or a delta entry for
    /// a created user). Annotations are dropped and `null` properties are treated as absent.
    pub fn from_graph(value: &Value) -> Result<Self, UserError> {
        match value {
            Value::Object(object) => Self::try_from(object.clone()),
            other => Err(UserError::NotAnObject {
                found: json_type(other),
            }),
        }
    }

    /// Merges one delta entry for this user, with Graph's semantics: a property that is absent is
    /// unchanged, a property that is `null` was cleared, any other value replaces the old one.
    ///
    /// Complex properties (such as `onPremisesExtensionAttributes`) are replaced as a whole, as
    /// Graph returns them whole. Annotations (`@removed`, `@odata.*`) are ignored: removal is the
    /// caller's decision. Applying the same entry twice is a no-op the second time.
    pub fn apply_delta(&mut self, delta: &Value) -> Result<DeltaEffect, UserError> {
        let Value::Object(entry) = delta else {
            return Err(UserError::NotAnObject {
                found: json_type(delta),
            });
        };
        if let Some(delta_id) = id_of(entry)
            && !delta_id.eq_ignore_ascii_case(&self.id)
        {
            return Err(UserError::IdMismatch {
                user_id: self.id.clone(),
                delta_id: delta_id.to_owned(),
            });
        }
        let mut effect = DeltaEffect::Unchanged;
        for (key, value) in entry {
            if is_annotation(key) || key == "id" {
                continue;
            }
            let changed = if value.is_null() {
                self.properties.remove(key).is_some()
            } else if self.properties.get(key) == Some(value) {
                false
            } else {
                self.properties.insert(key.clone(), value.clone());
                true
            };
            if changed {
                effect = DeltaEffect::Changed;
            }
        }
        Ok(effect)
    }

    /// The Entra object id, as Graph gave it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A property by name: the exact name first, else the first ASCII case-insensitive match
    /// (Graph property names are case-insensitive in OData, camelCase in JSON).
    pub fn get(&self, name: &str) -> Option<&Value> {
        if name.eq_ignore_ascii_case("id") {
            return self.properties.get("id");
        }
        self.properties.get(name).or_else(|| {
            self.properties
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value)
        })
    }

    /// A string property, trimmed; `None` when absent, not a string, or blank.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|text| !text.is_empty())
    }

    /// `displayName`, trimmed.
    pub fn display_name(&self) -> Option<&str> {
        self.text("displayName")
    }

    /// `mail`, trimmed.
    pub fn mail(&self) -> Option<&str> {
        self.text("mail")
    }

    /// `userPrincipalName`, trimmed.
    pub fn user_principal_name(&self) -> Option<&str> {
        self.text("userPrincipalName")
    }

    /// `employeeId`, trimmed.
    pub fn employee_id(&self) -> Option<&str> {
        self.text("employeeId")
    }

    /// `accountEnabled`; `None` when it was not selected or is not a boolean.
    pub fn account_enabled(&self) -> Option<bool> {
        self.get("accountEnabled").and_then(Value::as_bool)
    }

    /// The non-blank entries of `businessPhones`, trimmed, in Graph's order.
    pub fn business_phones(&self) -> Vec<&str> {
        match self.get("businessPhones") {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::trim)
                .filter(|phone| !phone.is_empty())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// `onPremisesExtensionAttributes.extensionAttribute{n}` (n in 1..=15), trimmed.
    pub fn extension_attribute(&self, n: u8) -> Option<&str> {
        if !(1..=15).contains(&n) {
            return None;
        }
        let Some(Value::Object(attributes)) = self.get("onPremisesExtensionAttributes") else {
            return None;
        };
        let name = format!("extensionAttribute{n}");
        attributes
            .get(&name)
            .or_else(|| {
                attributes
                    .iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case(&name))
                    .map(|(_, value)| value)
            })
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|text| !text.is_empty())
    }

    /// Every stored property (including `id`), keyed by the name Graph used.
    pub fn properties(&self) -> &Map<String, Value> {
        &self.properties
    }

    /// The user as a Graph JSON object, for storage as a snapshot.
    pub fn to_json(&self) -> Value {
        Value::Object(self.properties.clone())
    }
}

impl TryFrom<Map<String, Value>> for DirectoryUser {
    type Error = UserError;

    fn try_from(object: Map<String, Value>) -> Result<Self, Self::Error> {
        let id = id_of(&object).ok_or(UserError::MissingId)?.to_owned();
        let properties = object
            .into_iter()
            .filter(|(key, value)| !is_annotation(key) && !value.is_null())
            .collect();
        Ok(Self { id, properties })
    }
}

impl From<DirectoryUser> for Map<String, Value> {
    fn from(user: DirectoryUser) -> Self {
        user.properties
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn alice() -> DirectoryUser {
        DirectoryUser::from_graph(&json!({
            "@odata.type": "#microsoft.graph.user",
            "id": "0f3c1a2b-0000-4000-8000-000000000001",
            "displayName": "Alice Example",
            "jobTitle": "Engineer",
            "mail": null,
            "businessPhones": ["+1 555 0100", "  "],
            "onPremisesExtensionAttributes": {"extensionAttribute3": " CC-42 ", "extensionAttribute4": null},
            "extension_0123456789abcdef0123456789abcdef_costCenter": "4711"
        }))
        .unwrap()
    }

    #[test]
    fn keeps_every_property_but_drops_annotations_and_nulls() {
        let user = alice();
        assert_eq!(user.id(), "0f3c1a2b-0000-4000-8000-000000000001");
        assert!(user.get("@odata.type").is_none());
        assert!(user.get("mail").is_none());
        assert_eq!(user.display_name(), Some("Alice Example"));
        assert_eq!(user.business_phones(), vec!["+1 555 0100"]);
        assert_eq!(user.extension_attribute(3), Some("CC-42"));
        assert_eq!(user.extension_attribute(4), None);
        assert_eq!(user.extension_attribute(16), None);
        assert_eq!(
            user.text("extension_0123456789abcdef0123456789abcdef_costCenter"),
            Some("4711")
        );
    }

    #[test]
    fn property_names_match_case_insensitively() {
        let user = alice();
        assert_eq!(user.text("DISPLAYNAME"), Some("Alice Example"));
        assert_eq!(user.text("jobtitle"), Some("Engineer"));
    }

    #[test]
    fn rejects_non_objects_and_users_without_id() {
        assert_eq!(
            DirectoryUser::from_graph(&json!([1])),
            Err(UserError::NotAnObject { found: "an array" })
        );
        assert_eq!(
            DirectoryUser::from_graph(&json!({"displayName": "x"})),
            Err(UserError::MissingId)
        );
        assert_eq!(
            DirectoryUser::from_graph(&json!({"id": "  "})),
            Err(UserError::MissingId)
        );
    }

    #[test]
    fn delta_absent_is_unchanged_null_clears_value_replaces() {
        let mut user = alice();
        let effect = user
            .apply_delta(&json!({
                "id": "0F3C1A2B-0000-4000-8000-000000000001",
                "jobTitle": null,
                "department": "R&D",
                "@removed": {"reason": "changed"}
            }))
            .unwrap();
        assert_eq!(effect, DeltaEffect::Changed);
        assert_eq!(user.text("jobTitle"), None);
        assert_eq!(user.text("department"), Some("R&D"));
        assert_eq!(user.display_name(), Some("Alice Example"));
        assert!(user.get("@removed").is_none());
    }

    #[test]
    fn replaying_a_delta_is_unchanged() {
        let mut user = alice();
        let delta = json!({"id": user.id(), "city": "Oslo", "mobilePhone": null});
        user.apply_delta(&delta).unwrap();
        let before = user.clone();
        assert_eq!(user.apply_delta(&delta).unwrap(), DeltaEffect::Unchanged);
        assert_eq!(user, before);
    }

    #[test]
    fn complex_properties_are_replaced_whole() {
        let mut user = alice();
        user.apply_delta(&json!({"onPremisesExtensionAttributes": {"extensionAttribute1": "a"}}))
            .unwrap();
        assert_eq!(user.extension_attribute(1), Some("a"));
        assert_eq!(user.extension_attribute(3), None);
    }

    #[test]
    fn delta_for_another_user_is_refused() {
        let mut user = alice();
        let err = user
            .apply_delta(&json!({"id": "someone-else", "city": "Oslo"}))
            .unwrap_err();
        assert!(matches!(err, UserError::IdMismatch { .. }));
        assert_eq!(user.text("city"), None);
    }

    #[test]
    fn round_trips_through_serde_as_the_graph_object() {
        let user = alice();
        let json = serde_json::to_value(&user).unwrap();
        assert_eq!(json["displayName"], "Alice Example");
        let back: DirectoryUser = serde_json::from_value(json).unwrap();
        assert_eq!(back, user);
    }
}
