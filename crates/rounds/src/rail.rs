//! The mass-change safety rail's arithmetic: what a round's planned commands would do to the
//! tenant's cards (per outcome, per field, per cause, with a bounded sample of people), and
//! whether that is more than the tenant lets through unattended. No I/O, so every case is
//! unit-tested; the round holds or releases its plan with it (`round/rail.rs`).

use crate::drift::{Assessment, Outcome};
use crate::snapshot::{Action, action_for};
use cardsync_store::cards::CardStatus;
use cardsync_store::directory::{Presence, UserRow};
use cardsync_store::safety::Thresholds;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// People kept as examples in a held plan.
pub const SAMPLE_PEOPLE: usize = 20;

/// One person the plan would change, as an operator reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Person {
    /// The directory user.
    pub user_id: String,
    /// Their display name, when the directory gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `created`, `updated`, `reactivated`, `deactivated` or `deleted`.
    pub outcome: &'static str,
    /// Why, for a removal (`left the scope`, `account disabled`, `deleted in the directory`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<&'static str>,
    /// The fields an update changes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

/// What a round's plan would do to the cards.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Cards by outcome (`created`, `updated`, `reactivated`, `deactivated`, `deleted`,
    /// `unchanged`, `unmappable`).
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Updated cards per field.
    pub fields: BTreeMap<String, u64>,
    /// Removals per cause.
    pub causes: BTreeMap<&'static str, u64>,
    /// The first [`SAMPLE_PEOPLE`] people changed, removals first kept when there are many.
    pub samples: Vec<Person>,
}

impl Tally {
    /// Adds what `row`'s command would do (`assessment`, from [`crate::drift::assess`]).
    pub fn add(&mut self, row: &UserRow, assessment: &Assessment) {
        let (outcome, fields) = match assessment {
            Assessment::Unchanged => ("unchanged", Vec::new()),
            Assessment::Unmappable => ("unmappable", Vec::new()),
            Assessment::Changes(Outcome::Create(_)) => ("created", Vec::new()),
            Assessment::Changes(Outcome::Status { to, .. }) => (
                match to {
                    CardStatus::Active => "reactivated",
                    CardStatus::Deactivated => "deactivated",
                    CardStatus::Deleted => "deleted",
                },
                Vec::new(),
            ),
            Assessment::Changes(Outcome::Fields(plan)) => (
                "updated",
                plan.changes
                    .iter()
                    .map(|change| change.field.as_str().to_owned())
                    .collect(),
            ),
        };
        *self.outcomes.entry(outcome).or_default() += 1;
        for field in &fields {
            *self.fields.entry(field.clone()).or_default() += 1;
        }
        if matches!(outcome, "unchanged" | "unmappable") {
            return;
        }
        let cause = matches!(outcome, "deactivated" | "deleted").then(|| removal_cause(row));
        if let Some(cause) = cause {
            *self.causes.entry(cause).or_default() += 1;
        }
        let person = Person {
            user_id: row.user_id.clone(),
            name: row
                .data
                .get("displayName")
                .and_then(Value::as_str)
                .map(str::to_owned),
            outcome,
            cause,
            fields,
        };
        if self.samples.len() < SAMPLE_PEOPLE {
            self.samples.push(person);
        } else if cause.is_some()
            && let Some(slot) = self.samples.iter().position(|p| p.cause.is_none())
        {
            // Removals are what an operator must see first.
            self.samples[slot] = person;
        }
    }

    /// Cards the plan would deactivate or delete.
    pub fn removals(&self) -> u64 {
        self.count("deactivated") + self.count("deleted")
    }

    /// Active cards whose fields the plan would change.
    pub fn updates(&self) -> u64 {
        self.count("updated")
    }

    /// How many cards have `outcome`.
    pub fn count(&self, outcome: &str) -> u64 {
        self.outcomes.get(outcome).copied().unwrap_or(0)
    }

    /// Why the plan must wait for an admin, given the tenant's `active` cards; `None` when it
    /// may go.
    pub fn verdict(&self, thresholds: &Thresholds, active: u64) -> Option<String> {
        let share = |n: u64| {
            if active == 0 {
                100.0
            } else {
                n as f64 * 100.0 / active as f64
            }
        };
        let mut over = Vec::new();
        let removals = self.removals();
        if thresholds.exceeds(removals, active, thresholds.removal_percent) {
            over.push(format!(
                "would deactivate or delete {removals} of {active} active cards ({:.1} %, over the {} % threshold)",
                share(removals),
                thresholds.removal_percent
            ));
        }
        let updates = self.updates();
        if thresholds.exceeds(updates, active, thresholds.update_percent) {
            over.push(format!(
                "would update {updates} of {active} active cards ({:.1} %, over the {} % threshold)",
                share(updates),
                thresholds.update_percent
            ));
        }
        (!over.is_empty()).then(|| over.join("; "))
    }

    /// One line for the run's detail: the verdict, then the causes and fields, most first.
    pub fn describe(&self, verdict: &str, notes: &[String]) -> String {
        let mut parts = vec![format!("held: {verdict}")];
        parts.extend(notes.iter().cloned());
        let mut causes: Vec<(&&str, &u64)> = self.causes.iter().collect();
        causes.sort_by(|a, b| b.1.cmp(a.1));
        if !causes.is_empty() {
            parts.push(format!(
                "removals: {}",
                causes
                    .iter()
                    .map(|(cause, n)| format!("{n} {cause}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let mut fields: Vec<(&String, &u64)> = self.fields.iter().collect();
        fields.sort_by(|a, b| b.1.cmp(a.1));
        if !fields.is_empty() {
            parts.push(format!(
                "updated fields: {}",
                fields
                    .iter()
                    .map(|(field, n)| format!("{field} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        parts.join("; ")
    }
}

/// Why a row's command removes its card.
fn removal_cause(row: &UserRow) -> &'static str {
    match (row.presence, action_for(row)) {
        (Presence::Deleted, _) => "deleted in the directory",
        (_, Action::Deactivate) => "account disabled",
        _ if !row.in_scope => "left the scope",
        _ => "removed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::assess;
    use crate::snapshot::{Scope, merge_user};
    use cardsync_rules::FieldRules;
    use cardsync_store::cards::Card;
    use serde_json::json;
    use time::OffsetDateTime;
    use uuid::Uuid;

    fn row(id: &str, title: &str) -> UserRow {
        let item = json!({"id": id, "displayName": format!("Person {id}"), "jobTitle": title, "accountEnabled": true});
        merge_user(
            None,
            &item,
            &Scope::Everyone,
            None,
            OffsetDateTime::UNIX_EPOCH,
            false,
        )
        .unwrap()
    }

    fn card_of(row: &UserRow, rules: &FieldRules) -> Card {
        let mut card = Card::new(Uuid::nil());
        card.user_id = Some(row.user_id.clone());
        let user = cardsync_rules::DirectoryUser::from_graph(&row.data).unwrap();
        card.fields =
            cardsync_rules::plan_create(rules, &cardsync_rules::map_user(rules, &user).unwrap());
        card
    }

    #[test]
    fn people_who_left_the_scope_count_as_removals_with_their_cause() {
        let rules = FieldRules::default();
        let mut tally = Tally::default();
        for n in 0..12 {
            let before = row(&format!("u{n}"), "Engineer");
            let card = card_of(&before, &rules);
            let gone = UserRow {
                in_scope: false,
                ..before
            };
            tally.add(&gone, &assess(&gone, Some(&card), &rules));
        }
        let moved = row("u99", "Chief");
        let card = card_of(&row("u99", "Engineer"), &rules);
        tally.add(&moved, &assess(&moved, Some(&card), &rules));
        assert_eq!(tally.removals(), 12);
        assert_eq!(tally.updates(), 1);
        assert_eq!(tally.causes.get("left the scope"), Some(&12));
        assert_eq!(tally.fields.get("job_title"), Some(&1));
        assert_eq!(tally.samples.len(), 13);
        let verdict = tally
            .verdict(&Thresholds::default(), 20)
            .expect("12 of 20 is held");
        assert!(verdict.contains("12 of 20"), "{verdict}");
        assert_eq!(
            tally.verdict(&Thresholds::default(), 200),
            None,
            "6 % passes"
        );
        let line = tally.describe(&verdict, &["scope group Sales no longer found".into()]);
        assert!(
            line.contains("12 left the scope") && line.contains("Sales"),
            "{line}"
        );
    }

    #[test]
    fn samples_are_bounded_and_keep_removals_before_updates() {
        let rules = FieldRules::default();
        let mut tally = Tally::default();
        for n in 0..SAMPLE_PEOPLE {
            let moved = row(&format!("a{n}"), "Chief");
            let card = card_of(&row(&format!("a{n}"), "Engineer"), &rules);
            tally.add(&moved, &assess(&moved, Some(&card), &rules));
        }
        let gone = UserRow {
            presence: Presence::Deleted,
            ..row("z", "Engineer")
        };
        let card = card_of(&row("z", "Engineer"), &rules);
        tally.add(&gone, &assess(&gone, Some(&card), &rules));
        assert_eq!(tally.samples.len(), SAMPLE_PEOPLE);
        assert!(
            tally
                .samples
                .iter()
                .any(|p| p.cause == Some("deleted in the directory"))
        );
    }
}
