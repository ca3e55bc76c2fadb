//! Who among the directory's users is in scope beyond group membership: guests left out by
//! `userType`, and an attribute condition written in the expression language of field sources
//! (`department`, `lower(extension_<appid>_costCenter)`, …) with the values it must give. Graph's
//! users delta filters only by id, so cardsync applies these to the delta data itself.

use crate::{DirectoryUser, Expression};
use serde::{Deserialize, Serialize};

/// The most values a condition may list.
pub const MAX_CONDITION_VALUES: usize = 100;

/// A tenant's user filter; the default admits everyone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserFilter {
    /// Leave out users whose `userType` is `Guest` (B2B guests).
    #[serde(default)]
    pub exclude_guests: bool,
    /// When set, only users for whom it holds are in scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Condition>,
}

/// `expression` must give one of `values` (compared case-insensitively, trimmed); a user it
/// gives nothing for does not match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// What to compare, in the expression language.
    pub expression: Expression,
    /// The values that admit a user.
    #[serde(rename = "in")]
    pub values: Vec<String>,
}

impl UserFilter {
    /// Whether it leaves anyone out.
    pub fn is_active(&self) -> bool {
        self.exclude_guests || self.condition.is_some()
    }

    /// Whether `user` is in scope as far as this filter goes.
    pub fn admits(&self, user: &DirectoryUser) -> bool {
        if self.exclude_guests
            && user
                .get("userType")
                .and_then(|value| value.as_str())
                .is_some_and(|kind| kind.trim().eq_ignore_ascii_case("guest"))
        {
            return false;
        }
        match &self.condition {
            None => true,
            Some(condition) => condition
                .expression
                .evaluate_text(user)
                .is_some_and(|value| {
                    let value = value.trim();
                    condition
                        .values
                        .iter()
                        .any(|wanted| wanted.trim().eq_ignore_ascii_case(value))
                }),
        }
    }

    /// The Graph properties it reads (for the users delta's `$select`).
    pub fn properties(&self) -> Vec<String> {
        let mut properties = Vec::new();
        if self.exclude_guests {
            properties.push("userType".to_owned());
        }
        if let Some(condition) = &self.condition {
            properties.extend(condition.expression.referenced_properties());
        }
        properties
    }

    /// Every problem, as `path: message`.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if let Some(condition) = &self.condition {
            for error in condition.expression.diagnose() {
                problems.push(format!("condition.expression: {error}"));
            }
            if condition.values.is_empty() || condition.values.len() > MAX_CONDITION_VALUES {
                problems.push(format!(
                    "condition.in: list 1 to {MAX_CONDITION_VALUES} values"
                ));
            }
            if condition
                .values
                .iter()
                .any(|value| value.trim().is_empty() || value.len() > 1024)
            {
                problems.push("condition.in: values must be 1 to 1024 bytes, not blank".into());
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(value: serde_json::Value) -> DirectoryUser {
        DirectoryUser::from_graph(&value).expect("a user")
    }

    fn filter(value: serde_json::Value) -> UserFilter {
        serde_json::from_value(value).expect("a filter")
    }

    #[test]
    fn guests_are_left_out_only_when_asked() {
        let guest = user(json!({"id": "g", "userType": "Guest"}));
        let member = user(json!({"id": "m", "userType": "Member"}));
        assert!(UserFilter::default().admits(&guest));
        let no_guests = filter(json!({"exclude_guests": true}));
        assert!(!no_guests.admits(&guest));
        assert!(no_guests.admits(&member));
        assert!(no_guests.admits(&user(json!({"id": "unknown"}))));
        assert_eq!(no_guests.properties(), ["userType"]);
    }

    #[test]
    fn a_condition_admits_the_listed_values_case_insensitively_and_never_a_missing_one() {
        let sales = filter(
            json!({"condition": {"expression": "department", "in": ["Sales", "Marketing"]}}),
        );
        assert!(sales.validate().is_ok());
        assert!(sales.admits(&user(json!({"id": "a", "department": " sales "}))));
        assert!(!sales.admits(&user(json!({"id": "b", "department": "Legal"}))));
        assert!(!sales.admits(&user(json!({"id": "c"}))));
        assert_eq!(sales.properties(), ["department"]);
        let extension = filter(
            json!({"condition": {"expression": "extension_abc_costCenter", "in": ["4711"]}}),
        );
        assert!(extension.admits(&user(json!({"id": "d", "extension_abc_costCenter": 4711}))));
    }

    #[test]
    fn bad_conditions_are_named_with_their_path() {
        let bad = filter(json!({"condition": {"expression": "departmnt", "in": []}}));
        let problems = bad.validate().unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("condition.expression: unknown property"));
        assert!(problems[1].starts_with("condition.in:"));
        assert!(serde_json::from_value::<UserFilter>(json!({"guests": true})).is_err());
    }
}
