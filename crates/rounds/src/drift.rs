//! What the reconcile repairs: a snapshot row compared with the card it should have produced.
//! No I/O, so every case is unit-tested.
//!
//! The comparison asks the card-writer's own merge policy ([`plan_update`]) what the row's
//! command would change on the card, so a local edit that the rules keep (overwrite off) or a
//! field the rules never write is no drift, and a locked field edited on the card is.

use crate::snapshot::{Action, action_for};
use cardsync_rules::{
    DirectoryUser, FieldRules, FieldStates, RemovalPolicy, UpdatePlan, map_user, plan_create,
    plan_update,
};
use cardsync_store::cards::{Card, CardStatus};
use cardsync_store::directory::UserRow;

/// How a card differs from what its user's snapshot row calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drift {
    /// The user should have an active card and has none (its command was lost or dead-lettered).
    Missing,
    /// The card's status is not what the row calls for (active, deactivated, deleted).
    Status,
    /// A field's value is not what the rules give (edited behind cardsync's back, or a command
    /// that was dead-lettered).
    Fields,
}

impl Drift {
    /// The stable name used in counts and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Drift::Missing => "missing",
            Drift::Status => "status",
            Drift::Fields => "fields",
        }
    }
}

/// What the command a snapshot row calls for would do to its user's card: the card-writer's
/// own decisions, so the reconcile, the rules apply and the rules dry run agree on every card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A card is made (the user has none, or only a tombstone).
    Create(FieldStates),
    /// The card's status changes (to `active` again, deactivated or deleted).
    Status {
        /// The status before.
        from: Option<CardStatus>,
        /// The status after.
        to: CardStatus,
    },
    /// Field values change on the active card.
    Fields(UpdatePlan),
}

impl Outcome {
    /// The drift this outcome repairs.
    pub fn drift(&self) -> Drift {
        match self {
            Outcome::Create(_) => Drift::Missing,
            Outcome::Status { .. } => Drift::Status,
            Outcome::Fields(_) => Drift::Fields,
        }
    }
}

/// How `card` (the card of `row`'s user, if any) drifted from what `row` calls for under
/// `rules`; `None` when it is as it should be, or when the row maps to no card.
pub fn drift(row: &UserRow, card: Option<&Card>, rules: &FieldRules) -> Option<Drift> {
    outcome(row, card, rules).map(|outcome| outcome.drift())
}

/// What `row`'s command would change on `card` under `rules`; `None` when nothing (the card
/// is as the rules make it, or the rules map the user to no card).
pub fn outcome(row: &UserRow, card: Option<&Card>, rules: &FieldRules) -> Option<Outcome> {
    match assess(row, card, rules) {
        Assessment::Changes(outcome) => Some(outcome),
        Assessment::Unchanged | Assessment::Unmappable => None,
    }
}

/// [`outcome`], telling a card that stays as it is from a user the rules cannot map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assessment {
    /// The command would change the card so.
    Changes(Outcome),
    /// The card is as the rules make it (or there is none and none is wanted).
    Unchanged,
    /// The user should have a card but the rules cannot map it (an empty UID property with
    /// `when_missing: skip`): no command, the card stays as it is.
    Unmappable,
}

/// What `row`'s command would do to `card` under `rules`.
pub fn assess(row: &UserRow, card: Option<&Card>, rules: &FieldRules) -> Assessment {
    let status = card.map(|card| card.status);
    let to = |to| Assessment::Changes(Outcome::Status { from: status, to });
    match action_for(row) {
        Action::Upsert => {
            let card = match card {
                Some(card) if card.status == CardStatus::Active => Some(card),
                Some(card) if card.status == CardStatus::Deactivated => {
                    return to(CardStatus::Active);
                }
                // No card, or a tombstone: the person should have a card again.
                _ => None,
            };
            let Some(incoming) = mapped(row, rules) else {
                return Assessment::Unmappable;
            };
            let Some(card) = card else {
                return Assessment::Changes(Outcome::Create(plan_create(rules, &incoming)));
            };
            let plan = plan_update(rules, &card.fields, &incoming);
            if plan.is_unchanged() {
                Assessment::Unchanged
            } else {
                Assessment::Changes(Outcome::Fields(plan))
            }
        }
        Action::Deactivate if status == Some(CardStatus::Active) => to(CardStatus::Deactivated),
        Action::Deactivate => Assessment::Unchanged,
        Action::Remove => {
            let expected = match rules.removal {
                RemovalPolicy::Deactivate => CardStatus::Deactivated,
                RemovalPolicy::Delete => CardStatus::Deleted,
            };
            // A deactivated card under the delete policy is deleted; a deleted one stays so.
            match status {
                Some(CardStatus::Active) => to(expected),
                Some(CardStatus::Deactivated) if expected == CardStatus::Deleted => {
                    to(CardStatus::Deleted)
                }
                _ => Assessment::Unchanged,
            }
        }
    }
}

/// The directory's values for `row`'s card, the photo as its command reports it; `None` when
/// the rules cannot map the user (no card is made for it).
fn mapped(row: &UserRow, rules: &FieldRules) -> Option<cardsync_rules::MappedCard> {
    let user = DirectoryUser::from_graph(&row.data).ok()?;
    let mut card = map_user(rules, &user).ok()?;
    if let Some(etag) = &row.photo_etag {
        card.set_photo(Some(etag.clone()));
    }
    Some(card)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Scope, merge_user};
    use serde_json::json;
    use time::OffsetDateTime;
    use uuid::Uuid;

    fn row(item: serde_json::Value) -> UserRow {
        let mut row = merge_user(
            None,
            &item,
            &Scope::Everyone,
            None,
            OffsetDateTime::UNIX_EPOCH,
            false,
        )
        .unwrap();
        row.version = 3;
        row.emitted_version = 3;
        row.emitted_action = Some("upsert".into());
        row
    }

    fn ada() -> UserRow {
        row(json!({"id": "u1", "displayName": "Ada", "jobTitle": "CTO", "accountEnabled": true}))
    }

    /// The card the card-writer makes from the row's command.
    fn card_of(row: &UserRow, rules: &FieldRules) -> Card {
        let mut card = Card::new(Uuid::nil());
        card.user_id = Some(row.user_id.clone());
        card.fields = plan_create(rules, &mapped(row, rules).unwrap());
        card
    }

    fn rules(json: serde_json::Value) -> FieldRules {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_card_as_the_rules_make_it_has_not_drifted() {
        let rules = FieldRules::default();
        let row = ada();
        assert_eq!(drift(&row, Some(&card_of(&row, &rules)), &rules), None);
    }

    #[test]
    fn a_missing_or_deactivated_card_of_an_active_user_drifted() {
        let rules = FieldRules::default();
        let row = ada();
        assert_eq!(drift(&row, None, &rules), Some(Drift::Missing));
        let mut card = card_of(&row, &rules);
        card.status = CardStatus::Deactivated;
        assert_eq!(drift(&row, Some(&card), &rules), Some(Drift::Status));
    }

    #[test]
    fn a_value_edited_behind_cardsyncs_back_drifted_and_a_kept_local_edit_did_not() {
        let row = ada();
        let overwriting = FieldRules::default();
        let mut card = card_of(&row, &overwriting);
        card.fields = cardsync_rules::apply_local_edit(
            &overwriting,
            &card.fields,
            &cardsync_rules::FieldName::from("job_title"),
            Some("Chief"),
        )
        .unwrap();
        assert_eq!(
            drift(&row, Some(&card), &overwriting),
            Some(Drift::Fields),
            "overwrite on: the directory wins"
        );
        let keeping = rules(json!({"fields": {"job_title": {"overwrite": false}}}));
        assert_eq!(
            drift(&row, Some(&card), &keeping),
            None,
            "overwrite off: the local edit stays"
        );
    }

    #[test]
    fn removals_follow_the_policy_and_a_user_without_a_card_needs_nothing() {
        let mut gone = ada();
        gone.in_scope = false;
        let deactivating = FieldRules::default();
        let mut card = card_of(&gone, &deactivating);
        assert_eq!(
            drift(&gone, Some(&card), &deactivating),
            Some(Drift::Status)
        );
        card.status = CardStatus::Deactivated;
        assert_eq!(drift(&gone, Some(&card), &deactivating), None);
        let deleting = rules(json!({"removal": "delete"}));
        assert_eq!(drift(&gone, Some(&card), &deleting), Some(Drift::Status));
        assert_eq!(drift(&gone, None, &deleting), None);
    }

    #[test]
    fn a_disabled_account_wants_its_card_deactivated() {
        let disabled = row(json!({"id": "u1", "displayName": "Ada", "accountEnabled": false}));
        let rules = FieldRules::default();
        let card = card_of(&disabled, &rules);
        assert_eq!(drift(&disabled, Some(&card), &rules), Some(Drift::Status));
        assert_eq!(drift(&disabled, None, &rules), None);
    }
}
