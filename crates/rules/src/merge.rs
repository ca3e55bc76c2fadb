//! The merge policy: how the directory's values and local edits combine on a stored card.
//!
//! Each card field stores its value, whether that value came from the directory or from a local
//! edit, and the last value the directory gave. The card-writer calls [`plan_create`] for a new
//! card, [`plan_update`] for an existing or linked card, and [`apply_local_edit`] when someone
//! edits a card. Per managed field, on update:
//!
//! | flags | result |
//! |---|---|
//! | locked | the directory value, always |
//! | overwrite on | the directory value, even over a local edit |
//! | sync on, overwrite off | a non-empty local edit stays; otherwise the directory value |
//! | sync off, overwrite off | untouched (the directory never writes this field) |
//!
//! `last_directory` always records the incoming value. Planning is idempotent: applying the
//! same incoming values to the result changes nothing.

use crate::mapping::MappedCard;
use crate::rules::{FieldFlags, FieldName, FieldRules};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where a card field's current value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueSource {
    /// Set by a sync from the directory.
    Directory,
    /// Set by an edit on the card.
    Local,
}

/// One card field's stored state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldState {
    /// The value shown on the card; `None` is empty.
    pub value: Option<String>,
    /// Who set it.
    pub source: ValueSource,
    /// The last value the directory gave, whether or not it was applied.
    pub last_directory: Option<String>,
}

impl FieldState {
    /// The state of a field nobody has written yet.
    fn unset() -> Self {
        Self {
            value: None,
            source: ValueSource::Directory,
            last_directory: None,
        }
    }
}

/// Every field state of one card. Serialises as a JSON object keyed by field name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FieldStates(BTreeMap<FieldName, FieldState>);

impl FieldStates {
    /// No fields.
    pub fn new() -> Self {
        Self::default()
    }

    /// The states of a card that existed before any sync (e.g. one about to be linked by email):
    /// every non-empty value counts as a local edit, so `overwrite` decides whether it stays.
    pub fn from_local_values<N, V>(values: impl IntoIterator<Item = (N, Option<V>)>) -> Self
    where
        N: Into<FieldName>,
        V: AsRef<str>,
    {
        Self(
            values
                .into_iter()
                .map(|(name, value)| {
                    let value = value.and_then(|v| normalize(v.as_ref()));
                    let state = FieldState {
                        value,
                        source: ValueSource::Local,
                        last_directory: None,
                    };
                    (name.into(), state)
                })
                .collect(),
        )
    }

    /// One field's state.
    pub fn get(&self, field: &str) -> Option<&FieldState> {
        self.0.get(field)
    }

    /// One field's value (`None` when empty or absent).
    pub fn value(&self, field: &str) -> Option<&str> {
        self.0.get(field).and_then(|state| state.value.as_deref())
    }

    /// Sets one field's state.
    pub fn insert(&mut self, field: FieldName, state: FieldState) {
        self.0.insert(field, state);
    }

    /// Every field, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&FieldName, &FieldState)> {
        self.0.iter()
    }

    /// How many fields have a state.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no field has a state.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The names of the fields that have a value: what a new card shows, and so what its
    /// `created` event lists as changed.
    pub fn filled_names(&self) -> Vec<String> {
        self.0
            .iter()
            .filter(|(_, state)| state.value.is_some())
            .map(|(name, _)| name.to_string())
            .collect()
    }

    /// What an audit row holds for a change from `before` (`None`: a new card) to `after`: a
    /// new card's every field, else [`FieldStates::changes`].
    pub fn audited(
        before: Option<&FieldStates>,
        after: &FieldStates,
    ) -> (Option<FieldStates>, FieldStates) {
        match before {
            Some(before) => {
                let (was, is) = Self::changes(before, after);
                (Some(was), is)
            }
            None => (None, after.clone()),
        }
    }

    /// What changed from `before` to `after`: the fields whose state differs (value, source
    /// or last directory value), as each side has them. A field only one side has is only in
    /// that side's part. Equal states give two empty parts.
    pub fn changes(before: &FieldStates, after: &FieldStates) -> (FieldStates, FieldStates) {
        let differing = |from: &FieldStates, to: &FieldStates| -> FieldStates {
            from.0
                .iter()
                .filter(|(name, state)| to.0.get(*name) != Some(*state))
                .map(|(name, state)| (name.clone(), state.clone()))
                .collect()
        };
        (differing(before, after), differing(after, before))
    }
}

impl FromIterator<(FieldName, FieldState)> for FieldStates {
    fn from_iter<I: IntoIterator<Item = (FieldName, FieldState)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// Why a field's value changed in an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeReason {
    /// The value came from the directory and followed it.
    FollowedDirectory,
    /// Overwrite is on: the directory value replaced a local edit.
    OverwroteLocalEdit,
    /// The card's value was empty and the directory filled it.
    FilledEmpty,
    /// The field is locked: the directory value is enforced.
    Locked,
}

/// One value change, for the card event and the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldChange {
    /// The field.
    pub field: FieldName,
    /// The value before.
    pub before: Option<String>,
    /// The value after.
    pub after: Option<String>,
    /// Why.
    pub reason: ChangeReason,
}

/// The outcome of [`plan_update`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdatePlan {
    /// The card's field states after the update; store them if they differ from the current ones.
    pub states: FieldStates,
    /// Fields whose visible value changed, in field-name order.
    pub changes: Vec<FieldChange>,
    /// Fields where a local edit was kept although the directory has a different value.
    pub kept_local: Vec<FieldName>,
}

impl UpdatePlan {
    /// The names of the fields whose value changed.
    pub fn changed_fields(&self) -> Vec<&FieldName> {
        self.changes.iter().map(|change| &change.field).collect()
    }

    /// Whether nothing visible changes.
    pub fn is_unchanged(&self) -> bool {
        self.changes.is_empty()
    }
}

/// Why a local edit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditRefused {
    /// The field is locked: only the directory sets it.
    #[error("field {field} is managed by the directory and cannot be edited")]
    Locked {
        /// The field.
        field: FieldName,
    },
}

fn normalize(value: &str) -> Option<String> {
    let trimmed = value.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

fn normalized(value: &Option<String>) -> Option<String> {
    value.as_deref().and_then(normalize)
}

/// The field states of a new card: fields with `sync` (or `locked`) get the directory value;
/// the others start empty. Every reported field records the directory value as last seen.
pub fn plan_create(rules: &FieldRules, incoming: &MappedCard) -> FieldStates {
    rules
        .managed_fields()
        .into_iter()
        .filter_map(|(field, flags)| {
            let directory = normalized(incoming.fields.get(&field)?);
            let value = if flags.syncs_on_create() {
                directory.clone()
            } else {
                None
            };
            let state = FieldState {
                value,
                source: ValueSource::Directory,
                last_directory: directory,
            };
            Some((field, state))
        })
        .collect()
}

enum Decision {
    Take(ChangeReason),
    Keep { local_kept: bool },
}

fn decide(flags: FieldFlags, current: &FieldState, directory: &Option<String>) -> Decision {
    let local_edit = current.source == ValueSource::Local;
    if flags.locked {
        return Decision::Take(ChangeReason::Locked);
    }
    if flags.overwrites() {
        return Decision::Take(if local_edit {
            ChangeReason::OverwroteLocalEdit
        } else {
            ChangeReason::FollowedDirectory
        });
    }
    if !flags.sync {
        return Decision::Keep { local_kept: false };
    }
    if local_edit && current.value.is_some() {
        return Decision::Keep {
            local_kept: current.value != *directory,
        };
    }
    Decision::Take(if current.value.is_none() {
        ChangeReason::FilledEmpty
    } else {
        ChangeReason::FollowedDirectory
    })
}

/// Merges the directory's values into an existing card (also a card just linked by email).
///
/// Only fields the rules manage and the incoming card reports are considered; local-only fields
/// and unreported fields (an unknown photo) are kept as they are.
pub fn plan_update(rules: &FieldRules, current: &FieldStates, incoming: &MappedCard) -> UpdatePlan {
    let mut states = current.clone();
    let mut changes = Vec::new();
    let mut kept_local = Vec::new();
    for (field, flags) in rules.managed_fields() {
        let Some(reported) = incoming.fields.get(&field) else {
            continue;
        };
        let directory = normalized(reported);
        let before = current
            .get(field.as_str())
            .cloned()
            .unwrap_or_else(FieldState::unset);
        let mut after = before.clone();
        after.last_directory = directory.clone();
        match decide(flags, &before, &directory) {
            Decision::Take(reason) => {
                after.value = directory;
                after.source = ValueSource::Directory;
                if after.value != before.value {
                    changes.push(FieldChange {
                        field: field.clone(),
                        before: before.value.clone(),
                        after: after.value.clone(),
                        reason,
                    });
                }
            }
            Decision::Keep { local_kept } => {
                if local_kept {
                    kept_local.push(field.clone());
                }
            }
        }
        states.insert(field, after);
    }
    UpdatePlan {
        states,
        changes,
        kept_local,
    }
}

/// Applies an edit made on the card: the value (trimmed; blank clears it) becomes a local edit.
/// Refused for locked fields. Fields the rules do not manage are local-only and always editable.
pub fn apply_local_edit(
    rules: &FieldRules,
    current: &FieldStates,
    field: &FieldName,
    value: Option<&str>,
) -> Result<FieldStates, EditRefused> {
    if rules
        .flags_of(field.as_str())
        .is_some_and(|flags| flags.locked)
    {
        return Err(EditRefused::Locked {
            field: field.clone(),
        });
    }
    let mut states = current.clone();
    let last_directory = current
        .get(field.as_str())
        .and_then(|state| state.last_directory.clone());
    states.insert(
        field.clone(),
        FieldState {
            value: value.and_then(normalize),
            source: ValueSource::Local,
            last_directory,
        },
    );
    Ok(states)
}

/// Drops a local edit: the field takes the last directory value again and follows the directory
/// from now on. A field with no state is left as it is.
pub fn revert_to_directory(current: &FieldStates, field: &FieldName) -> FieldStates {
    let mut states = current.clone();
    if let Some(state) = current.get(field.as_str()) {
        states.insert(
            field.clone(),
            FieldState {
                value: state.last_directory.clone(),
                source: ValueSource::Directory,
                last_directory: state.last_directory.clone(),
            },
        );
    }
    states
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Expression;
    use crate::rules::{CustomFieldRule, StandardField};

    fn incoming(values: &[(&str, Option<&str>)]) -> MappedCard {
        MappedCard {
            object_id: "u1".into(),
            uid: "u1".into(),
            link_email: None,
            fields: values
                .iter()
                .map(|(name, value)| (FieldName::from(*name), value.map(str::to_owned)))
                .collect(),
        }
    }

    fn rules_with(field: StandardField, sync: bool, overwrite: bool, locked: bool) -> FieldRules {
        let mut rules = FieldRules::default();
        if field == StandardField::Photo {
            rules.fields.photo.sync = sync;
            rules.fields.photo.overwrite = overwrite;
            rules.fields.photo.locked = locked;
        } else {
            let rule = match field {
                StandardField::Name => &mut rules.fields.name,
                StandardField::Email => &mut rules.fields.email,
                StandardField::Company => &mut rules.fields.company,
                StandardField::Phone => &mut rules.fields.phone,
                StandardField::Location => &mut rules.fields.location,
                StandardField::Department => &mut rules.fields.department,
                _ => &mut rules.fields.job_title,
            };
            rule.sync = sync;
            rule.overwrite = overwrite;
            rule.locked = locked;
        }
        rules
    }

    fn title(value: Option<&str>) -> MappedCard {
        incoming(&[("job_title", value)])
    }

    /// A card created from "Marketing Manager", then edited locally to `edit`.
    fn edited(rules: &FieldRules, edit: Option<&str>) -> FieldStates {
        let created = plan_create(rules, &title(Some("Marketing Manager")));
        apply_local_edit(rules, &created, &"job_title".into(), edit).unwrap()
    }

    #[test]
    fn create_sets_synced_fields_from_the_directory() {
        let rules = FieldRules::default();
        let states = plan_create(
            &rules,
            &incoming(&[("name", Some(" Ann ")), ("phone", None)]),
        );
        assert_eq!(
            states.get("name"),
            Some(&FieldState {
                value: Some("Ann".into()),
                source: ValueSource::Directory,
                last_directory: Some("Ann".into())
            })
        );
        assert_eq!(states.value("phone"), None);
        assert!(
            states.get("photo").is_none(),
            "unreported fields stay absent"
        );
    }

    #[test]
    fn create_leaves_fields_with_sync_off_empty() {
        let rules = rules_with(StandardField::JobTitle, false, false, false);
        let states = plan_create(&rules, &title(Some("Engineer")));
        let state = states.get("job_title").unwrap();
        assert_eq!(state.value, None);
        assert_eq!(state.last_directory.as_deref(), Some("Engineer"));
    }

    #[test]
    fn sync_off_and_overwrite_off_never_writes_the_field() {
        let rules = rules_with(StandardField::JobTitle, false, false, false);
        let created = plan_create(&rules, &title(Some("Engineer")));
        let plan = plan_update(&rules, &created, &title(Some("Lead")));
        assert!(plan.is_unchanged());
        assert_eq!(plan.states.value("job_title"), None);
        assert_eq!(
            plan.states
                .get("job_title")
                .unwrap()
                .last_directory
                .as_deref(),
            Some("Lead")
        );
    }

    #[test]
    fn sync_off_with_overwrite_on_fills_on_later_syncs() {
        let rules = rules_with(StandardField::JobTitle, false, true, false);
        let created = plan_create(&rules, &title(Some("Engineer")));
        assert_eq!(created.value("job_title"), None);
        let plan = plan_update(&rules, &created, &title(Some("Engineer")));
        assert_eq!(plan.states.value("job_title"), Some("Engineer"));
    }

    #[test]
    fn overwrite_on_follows_directory_changes() {
        let rules = FieldRules::default();
        let created = plan_create(&rules, &title(Some("Marketing Manager")));
        let plan = plan_update(&rules, &created, &title(Some("Director of Marketing")));
        assert_eq!(
            plan.states.value("job_title"),
            Some("Director of Marketing")
        );
        assert_eq!(
            plan.changes,
            vec![FieldChange {
                field: "job_title".into(),
                before: Some("Marketing Manager".into()),
                after: Some("Director of Marketing".into()),
                reason: ChangeReason::FollowedDirectory
            }]
        );
    }

    #[test]
    fn overwrite_on_replaces_a_local_edit_even_without_a_directory_change() {
        let rules = FieldRules::default();
        let states = edited(&rules, Some("Chief Vibes Officer"));
        let plan = plan_update(&rules, &states, &title(Some("Marketing Manager")));
        assert_eq!(plan.states.value("job_title"), Some("Marketing Manager"));
        assert_eq!(
            plan.states.get("job_title").unwrap().source,
            ValueSource::Directory
        );
        assert_eq!(plan.changes[0].reason, ChangeReason::OverwroteLocalEdit);
    }

    #[test]
    fn overwrite_off_keeps_a_local_edit() {
        let rules = rules_with(StandardField::JobTitle, true, false, false);
        let states = edited(&rules, Some("VP of Sales"));
        let plan = plan_update(&rules, &states, &title(Some("Director of Sales")));
        assert!(plan.is_unchanged());
        assert_eq!(plan.states.value("job_title"), Some("VP of Sales"));
        assert_eq!(plan.kept_local, vec![FieldName::from("job_title")]);
        assert_eq!(
            plan.states
                .get("job_title")
                .unwrap()
                .last_directory
                .as_deref(),
            Some("Director of Sales")
        );
    }

    #[test]
    fn overwrite_off_still_follows_the_directory_without_a_local_edit() {
        let rules = rules_with(StandardField::JobTitle, true, false, false);
        let created = plan_create(&rules, &title(Some("Marketing Manager")));
        let plan = plan_update(&rules, &created, &title(Some("Director of Marketing")));
        assert_eq!(
            plan.states.value("job_title"),
            Some("Director of Marketing")
        );
        assert_eq!(plan.changes[0].reason, ChangeReason::FollowedDirectory);
        let cleared = plan_update(&rules, &plan.states, &title(None));
        assert_eq!(cleared.states.value("job_title"), None);
    }

    #[test]
    fn overwrite_off_fills_an_empty_card_value() {
        let rules = rules_with(StandardField::JobTitle, true, false, false);
        let states = edited(&rules, Some("  "));
        assert_eq!(states.value("job_title"), None);
        let plan = plan_update(&rules, &states, &title(Some("Engineer")));
        assert_eq!(plan.states.value("job_title"), Some("Engineer"));
        assert_eq!(
            plan.states.get("job_title").unwrap().source,
            ValueSource::Directory
        );
        assert_eq!(plan.changes[0].reason, ChangeReason::FilledEmpty);
    }

    #[test]
    fn a_linked_card_keeps_its_values_where_overwrite_is_off() {
        let mut rules = FieldRules::default();
        rules.fields.phone.overwrite = false;
        let existing = FieldStates::from_local_values([
            ("name", Some("Jess")),
            ("phone", Some("+1 555 0199")),
            ("job_title", None),
        ]);
        let plan = plan_update(
            &rules,
            &existing,
            &incoming(&[
                ("name", Some("Jessica Swift")),
                ("phone", Some("+1 555 0100")),
                ("job_title", Some("Engineer")),
            ]),
        );
        assert_eq!(plan.states.value("name"), Some("Jessica Swift"));
        assert_eq!(plan.states.value("phone"), Some("+1 555 0199"));
        assert_eq!(plan.states.value("job_title"), Some("Engineer"));
    }

    #[test]
    fn locked_fields_refuse_local_edits_and_always_follow_the_directory() {
        let rules = rules_with(StandardField::JobTitle, true, true, true);
        let created = plan_create(&rules, &title(Some("Engineer")));
        let err = apply_local_edit(&rules, &created, &"job_title".into(), Some("CEO")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "field job_title is managed by the directory and cannot be edited"
        );
        // A local edit made before the field was locked is replaced on the next sync.
        let unlocked = FieldRules::default();
        let states =
            apply_local_edit(&unlocked, &created, &"job_title".into(), Some("CEO")).unwrap();
        let plan = plan_update(&rules, &states, &title(Some("Engineer")));
        assert_eq!(plan.states.value("job_title"), Some("Engineer"));
        assert_eq!(plan.changes[0].reason, ChangeReason::Locked);
    }

    #[test]
    fn locked_implies_sync_and_overwrite_even_when_they_are_off() {
        let rules = rules_with(StandardField::JobTitle, false, false, true);
        let created = plan_create(&rules, &title(Some("Engineer")));
        assert_eq!(created.value("job_title"), Some("Engineer"));
        let local = FieldStates::from_local_values([("job_title", Some("CEO"))]);
        let plan = plan_update(&rules, &local, &title(Some("Engineer")));
        assert_eq!(plan.states.value("job_title"), Some("Engineer"));
    }

    #[test]
    fn local_only_fields_are_editable_and_never_touched() {
        let rules = FieldRules::default();
        let states =
            apply_local_edit(&rules, &FieldStates::new(), &"nickname".into(), Some("JJ")).unwrap();
        let plan = plan_update(&rules, &states, &incoming(&[("nickname", Some("x"))]));
        assert_eq!(plan.states.value("nickname"), Some("JJ"));
        assert!(plan.is_unchanged());
    }

    #[test]
    fn the_photo_keeps_a_local_photo_by_default_but_follows_the_directory_otherwise() {
        let rules = FieldRules::default();
        let created = plan_create(&rules, &incoming(&[("photo", Some("etag-1"))]));
        let plan = plan_update(&rules, &created, &incoming(&[("photo", Some("etag-2"))]));
        assert_eq!(plan.states.value("photo"), Some("etag-2"));
        let local =
            apply_local_edit(&rules, &plan.states, &"photo".into(), Some("local-1")).unwrap();
        let plan = plan_update(&rules, &local, &incoming(&[("photo", Some("etag-3"))]));
        assert_eq!(plan.states.value("photo"), Some("local-1"));
        let unknown = plan_update(&rules, &plan.states, &incoming(&[]));
        assert_eq!(unknown.states, plan.states);
    }

    #[test]
    fn custom_fields_follow_their_own_flags() {
        let mut rules = FieldRules::default();
        let mut rule = CustomFieldRule::new(Expression::parse("extensionAttribute1").unwrap());
        rule.overwrite = false;
        rules.custom_fields.insert("badge".into(), rule);
        let states = FieldStates::from_local_values([("badge", Some("B-1"))]);
        let plan = plan_update(&rules, &states, &incoming(&[("badge", Some("B-2"))]));
        assert_eq!(plan.states.value("badge"), Some("B-1"));
        assert_eq!(plan.kept_local, vec![FieldName::from("badge")]);
    }

    #[test]
    fn revert_takes_the_last_directory_value_again() {
        let rules = rules_with(StandardField::JobTitle, true, false, false);
        let states = edited(&rules, Some("VP"));
        let plan = plan_update(&rules, &states, &title(Some("Director")));
        let reverted = revert_to_directory(&plan.states, &"job_title".into());
        assert_eq!(reverted.value("job_title"), Some("Director"));
        assert_eq!(
            reverted.get("job_title").unwrap().source,
            ValueSource::Directory
        );
    }

    #[test]
    fn applying_the_same_values_twice_changes_nothing_the_second_time() {
        let rules = rules_with(StandardField::JobTitle, true, false, false);
        let states = edited(&rules, None);
        let first = plan_update(&rules, &states, &title(Some("Engineer")));
        let second = plan_update(&rules, &first.states, &title(Some("Engineer")));
        assert!(second.is_unchanged());
        assert_eq!(second.states, first.states);
    }

    #[test]
    fn changes_hold_only_the_fields_whose_state_differs() {
        let rules = rules_with(StandardField::JobTitle, true, false, false);
        let before = plan_create(
            &rules,
            &incoming(&[("name", Some("Ann")), ("job_title", Some("Engineer"))]),
        );
        // Same states: nothing on either side.
        let (was, is) = FieldStates::changes(&before, &before);
        assert!(was.is_empty() && is.is_empty());

        // A new value, a directory value kept out by a local edit, a field added, one gone.
        let mut after =
            apply_local_edit(&rules, &before, &"job_title".into(), Some("Lead")).unwrap();
        after = plan_update(&rules, &after, &title(Some("Architect"))).states;
        after.insert(
            "phone".into(),
            FieldState {
                value: Some("+1 555".into()),
                source: ValueSource::Directory,
                last_directory: Some("+1 555".into()),
            },
        );
        let mut gone = after.clone();
        gone.0.remove("name");
        let (was, is) = FieldStates::changes(&before, &gone);
        assert_eq!(
            serde_json::to_value(&was).unwrap(),
            serde_json::json!({
                "job_title": {"value": "Engineer", "source": "directory", "last_directory": "Engineer"},
                "name": {"value": "Ann", "source": "directory", "last_directory": "Ann"},
            })
        );
        assert_eq!(
            serde_json::to_value(&is).unwrap(),
            serde_json::json!({
                "job_title": {"value": "Lead", "source": "local", "last_directory": "Architect"},
                "phone": {"value": "+1 555", "source": "directory", "last_directory": "+1 555"},
            })
        );
    }

    #[test]
    fn states_serialise_as_an_object_of_fields() {
        let states = plan_create(&FieldRules::default(), &incoming(&[("name", Some("Ann"))]));
        assert_eq!(
            serde_json::to_value(&states).unwrap(),
            serde_json::json!({"name": {"value": "Ann", "source": "directory", "last_directory": "Ann"}})
        );
    }
}
