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
mod tests;
