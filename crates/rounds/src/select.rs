//! Which user properties a users enumeration selects, and which fields of a rule set read
//! properties a stored `$select` lacks. Graph returns and tracks only the selected properties,
//! and a delta link keeps the `$select` of the enumeration that made it: a rule reading beyond
//! it cannot be previewed from the snapshot, and applying it needs a full enumeration first.

use cardsync_rules::{FieldRules, StandardField};
use std::collections::{BTreeMap, BTreeSet};

/// Properties every users enumeration selects, whatever the rules: what scoping, removal, the
/// UID choices and linking read.
const ALWAYS: [&str; 6] = [
    "id",
    "accountEnabled",
    "displayName",
    "mail",
    "userPrincipalName",
    "employeeId",
];

/// The `$select` of a users enumeration under `rules`.
pub fn users_select(rules: &FieldRules) -> BTreeSet<String> {
    let mut select = rules.graph_select();
    select.extend(ALWAYS.iter().map(|property| (*property).to_owned()));
    select
}

/// Whether `selected` (a stored `$select`) holds `property`; Graph's property names are
/// case-insensitive.
fn holds(selected: &[String], property: &str) -> bool {
    selected
        .iter()
        .any(|known| known.eq_ignore_ascii_case(property))
}

/// Whether `selected` (a stored `$select`) holds every one of `properties`.
pub fn holds_all(selected: &[String], properties: &[String]) -> bool {
    properties.iter().all(|property| holds(selected, property))
}

/// Whether an enumeration that selected `selected` gave every property `rules` read.
pub fn covers(selected: &[String], rules: &FieldRules) -> bool {
    users_select(rules)
        .iter()
        .all(|property| holds(selected, property))
}

/// The fields of `rules` that read a property `selected` lacks, each with those properties
/// (in field-name order): their values cannot be computed from a snapshot enumerated with
/// `selected`. A UID source outside it is reported as the field `uid`.
pub fn unselected_fields(rules: &FieldRules, selected: &[String]) -> BTreeMap<String, Vec<String>> {
    let missing = |properties: Vec<String>| -> Vec<String> {
        let mut missing: Vec<String> = properties
            .into_iter()
            .filter(|property| !holds(selected, property))
            .collect();
        missing.sort();
        missing.dedup();
        missing
    };
    let standard = StandardField::ALL.into_iter().filter_map(|field| {
        rules.source_of(field).map(|expression| {
            (
                field.as_str().to_owned(),
                expression.referenced_properties(),
            )
        })
    });
    let custom = rules
        .custom_fields
        .iter()
        .map(|(name, rule)| (name.clone(), rule.expression.referenced_properties()));
    let uid = std::iter::once((
        "uid".to_owned(),
        vec![rules.uid.source.property().to_owned()],
    ));
    standard
        .chain(custom)
        .chain(uid)
        .map(|(field, properties)| (field, missing(properties)))
        .filter(|(_, missing)| !missing.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(json: serde_json::Value) -> FieldRules {
        serde_json::from_value(json).unwrap()
    }

    fn names(set: &BTreeSet<String>) -> Vec<String> {
        set.iter().cloned().collect()
    }

    #[test]
    fn the_default_select_covers_the_default_rules_and_nothing_is_unselected() {
        let defaults = FieldRules::default();
        let selected = names(&users_select(&defaults));
        assert!(covers(&selected, &defaults));
        assert!(unselected_fields(&defaults, &selected).is_empty());
    }

    #[test]
    fn a_custom_field_reading_a_new_property_is_named_with_that_property() {
        let selected = names(&users_select(&FieldRules::default()));
        let proposed = rules(json!({
            "custom_fields": {
                "cost_center": {"expression": "coalesce(EMPLOYEETYPE, \"none\")"},
                "given": {"expression": "displayName"}
            },
            "fields": {"job_title": {"source": "join(\" \", jobTitle, officeLocation)"}}
        }));
        assert!(!covers(&selected, &proposed));
        let unselected = unselected_fields(&proposed, &selected);
        assert_eq!(
            unselected.into_iter().collect::<Vec<_>>(),
            vec![
                ("cost_center".to_owned(), vec!["employeeType".to_owned()]),
                ("job_title".to_owned(), vec!["officeLocation".to_owned()]),
            ]
        );
    }

    #[test]
    fn property_names_compare_without_case() {
        let proposed = rules(json!({"custom_fields": {"kind": {"expression": "employeeType"}}}));
        let mut selected = names(&users_select(&FieldRules::default()));
        selected.push("EmployeeType".to_owned());
        assert!(covers(&selected, &proposed));
        assert!(unselected_fields(&proposed, &selected).is_empty());
    }
}
