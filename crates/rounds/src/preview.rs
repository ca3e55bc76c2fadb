//! The rules dry run: what a proposed rule set would change on the cards, computed from the
//! stored directory snapshot and the cards alone (no Graph call), with the very decisions the
//! rules apply makes ([`crate::drift::outcome`], the card-writer's merge policy), so its counts
//! are what the apply then changes.
//!
//! The snapshot is walked in pages inside one read-only repeatable-read transaction (one
//! consistent view, memory bounded by a page whatever the tenant's size). Fields whose rule
//! reads a property the stored users `$select` lacks are not counted but named: the snapshot
//! has no value for them until an enumeration with the wider `$select` (which the apply runs).

use crate::drift::{Assessment, Outcome, assess};
use crate::select::unselected_fields;
use cardsync_rules::FieldRules;
use cardsync_store::StoreError;
use cardsync_store::cards::{self, Card, CardStatus};
use cardsync_store::directory::{self, UserRow};
use sqlx::PgPool;
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

/// Before/after examples kept per field.
pub const SAMPLES: usize = 5;

/// Snapshot rows read per page.
const PAGE: i64 = 2000;

/// One card's value before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The card (none for a card the apply would create).
    pub card_id: Option<Uuid>,
    /// Its directory user.
    pub user_id: String,
    /// The value (or status) now.
    pub before: Option<String>,
    /// The value (or status) the rules would give.
    pub after: Option<String>,
}

/// How many cards one field (or the status) would change on, with a few examples.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Cards whose value would change.
    pub changes: u64,
    /// The first [`SAMPLES`] of them, in user id order.
    pub samples: Vec<Sample>,
}

impl Tally {
    fn add(&mut self, sample: impl FnOnce() -> Sample) {
        self.changes += 1;
        if self.samples.len() < SAMPLES {
            self.samples.push(sample());
        }
    }
}

/// What a proposed rule set would change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preview {
    /// Snapshot users examined.
    pub users: u64,
    /// Active cards on which at least one previewable field would change.
    pub cards_changed: u64,
    /// Cards that would be made (users the rules map who have no card).
    pub cards_created: u64,
    /// Users who should have a card but whom the proposed rules cannot map (an empty UID
    /// property with `when_missing: skip`): the apply leaves their cards alone.
    pub unmappable: u64,
    /// Cards whose status would change (a removal policy change, say).
    pub status: Tally,
    /// Per field, the cards whose value would change.
    pub fields: BTreeMap<String, Tally>,
    /// Fields not previewed, each with the properties the snapshot lacks for it.
    pub unpreviewable: BTreeMap<String, Vec<String>>,
}

impl Preview {
    /// An empty preview of `proposed` over a snapshot enumerated with `selected`.
    pub fn new(proposed: &FieldRules, selected: &[String]) -> Self {
        Self {
            unpreviewable: unselected_fields(proposed, selected),
            ..Self::default()
        }
    }

    /// Adds what `proposed` would do to the card of `row`'s user.
    pub fn add(&mut self, proposed: &FieldRules, row: &UserRow, card: Option<&Card>) {
        self.users += 1;
        let sample = |before: Option<&str>, after: Option<&str>| Sample {
            card_id: card.map(|card| card.card_id),
            user_id: row.user_id.clone(),
            before: before.map(str::to_owned),
            after: after.map(str::to_owned),
        };
        match assess(row, card, proposed) {
            Assessment::Unchanged => {}
            Assessment::Unmappable => self.unmappable += 1,
            Assessment::Changes(Outcome::Create(_)) => self.cards_created += 1,
            Assessment::Changes(Outcome::Status { from, to }) => self
                .status
                .add(|| sample(from.map(CardStatus::as_str), Some(CardStatus::as_str(to)))),
            Assessment::Changes(Outcome::Fields(plan)) => {
                let mut changed = false;
                for change in &plan.changes {
                    let field = change.field.as_str();
                    if self.unpreviewable.contains_key(field) {
                        continue;
                    }
                    changed = true;
                    self.fields
                        .entry(field.to_owned())
                        .or_default()
                        .add(|| sample(change.before.as_deref(), change.after.as_deref()));
                }
                self.cards_changed += u64::from(changed);
            }
        }
    }
}

/// One page of the snapshot with its users' cards.
type Page = (Vec<UserRow>, HashMap<String, Card>);

/// Pages read ahead of the comparison: PostgreSQL reads the next page while this process
/// compares the last, and memory stays bounded by a few pages.
const READ_AHEAD: usize = 2;

/// Previews `proposed` over `tenant`'s snapshot and cards; `selected` is the `$select` the
/// snapshot was enumerated with.
pub async fn preview(
    pool: &PgPool,
    tenant: Uuid,
    proposed: &FieldRules,
    selected: &[String],
) -> Result<Preview, StoreError> {
    let mut preview = Preview::new(proposed, selected);
    let (pages, mut next) = tokio::sync::mpsc::channel::<Result<Page, StoreError>>(READ_AHEAD);
    let reader = tokio::spawn(read_pages(pool.clone(), tenant, pages));
    while let Some(page) = next.recv().await {
        let (rows, by_user) = page?;
        for row in &rows {
            preview.add(proposed, row, by_user.get(&row.user_id));
        }
    }
    // Every page was read (the channel closed after the last); a failed read was sent as one.
    let _ = reader.await;
    Ok(preview)
}

/// Reads the tenant's snapshot page by page with each page's cards, in one read-only
/// repeatable-read transaction, into `pages`; stops early when nobody listens any more.
async fn read_pages(
    pool: PgPool,
    tenant: Uuid,
    pages: tokio::sync::mpsc::Sender<Result<Page, StoreError>>,
) {
    let read = async {
        let mut tx = pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let mut after: Option<String> = None;
        loop {
            let rows = directory::users_after(&mut *tx, tenant, after.as_deref(), PAGE).await?;
            let Some(last) = rows.last() else {
                return Ok::<_, StoreError>(());
            };
            after = Some(last.user_id.clone());
            let ids: Vec<String> = rows.iter().map(|row| row.user_id.clone()).collect();
            let by_user: HashMap<String, Card> = cards::of_users(&mut *tx, tenant, &ids)
                .await?
                .into_iter()
                .filter_map(|card| Some((card.user_id.clone()?, card)))
                .collect();
            if pages.send(Ok((rows, by_user))).await.is_err() {
                return Ok(());
            }
        }
    };
    if let Err(error) = read.await {
        let _ = pages.send(Err(error)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::select::users_select;
    use crate::snapshot::{Scope, merge_user};
    use cardsync_rules::{map_user, plan_create};
    use serde_json::json;
    use time::OffsetDateTime;

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
        row.emitted_action = Some("upsert".into());
        row
    }

    fn rules(json: serde_json::Value) -> FieldRules {
        serde_json::from_value(json).unwrap()
    }

    fn card_of(row: &UserRow, rules: &FieldRules) -> Card {
        let user = cardsync_rules::DirectoryUser::from_graph(&row.data).unwrap();
        let mut card = Card::new(Uuid::nil());
        card.user_id = Some(row.user_id.clone());
        card.fields = plan_create(rules, &map_user(rules, &user).unwrap());
        card
    }

    fn selected() -> Vec<String> {
        users_select(&FieldRules::default()).into_iter().collect()
    }

    #[test]
    fn a_new_source_counts_the_cards_whose_value_changes_with_samples() {
        let current = FieldRules::default();
        let proposed = rules(json!({"fields": {"name": {"source": "upper(displayName)"}}}));
        let mut preview = Preview::new(&proposed, &selected());
        let ada = row(json!({"id": "u1", "displayName": "Ada", "accountEnabled": true}));
        let upper = row(json!({"id": "u2", "displayName": "BOB", "accountEnabled": true}));
        preview.add(&proposed, &ada, Some(&card_of(&ada, &current)));
        preview.add(&proposed, &upper, Some(&card_of(&upper, &current)));
        assert_eq!(preview.users, 2);
        assert_eq!(preview.cards_changed, 1);
        let name = &preview.fields["name"];
        assert_eq!(name.changes, 1);
        assert_eq!(name.samples[0].user_id, "u1");
        assert_eq!(name.samples[0].before.as_deref(), Some("Ada"));
        assert_eq!(name.samples[0].after.as_deref(), Some("ADA"));
        assert!(preview.unpreviewable.is_empty());
    }

    #[test]
    fn a_field_reading_an_unselected_property_is_named_not_counted() {
        let current = FieldRules::default();
        let proposed = rules(json!({
            "custom_fields": {"kind": {"expression": "employeeType"}},
            "fields": {"job_title": {"source": "lower(jobTitle)"}}
        }));
        let mut preview = Preview::new(&proposed, &selected());
        let ada = row(json!({"id": "u1", "displayName": "Ada", "jobTitle": "CTO"}));
        preview.add(&proposed, &ada, Some(&card_of(&ada, &current)));
        assert_eq!(
            preview.unpreviewable.get("kind"),
            Some(&vec!["employeeType".to_owned()])
        );
        assert!(!preview.fields.contains_key("kind"));
        assert_eq!(preview.fields["job_title"].changes, 1);
    }

    #[test]
    fn samples_stop_at_the_limit_while_counts_go_on() {
        let current = FieldRules::default();
        let proposed = rules(json!({"fields": {"name": {"source": "lower(displayName)"}}}));
        let mut preview = Preview::new(&proposed, &selected());
        for n in 0..(SAMPLES + 3) {
            let user = row(json!({"id": format!("u{n}"), "displayName": format!("User {n}")}));
            preview.add(&proposed, &user, Some(&card_of(&user, &current)));
        }
        assert_eq!(preview.fields["name"].changes, (SAMPLES + 3) as u64);
        assert_eq!(preview.fields["name"].samples.len(), SAMPLES);
    }

    #[test]
    fn a_removal_policy_change_counts_status_and_a_missing_card_counts_as_created() {
        let proposed = rules(json!({"removal": "delete"}));
        let mut preview = Preview::new(&proposed, &selected());
        let mut gone = row(json!({"id": "u1", "displayName": "Ada"}));
        gone.in_scope = false;
        let mut card = card_of(&gone, &FieldRules::default());
        card.status = CardStatus::Deactivated;
        preview.add(&proposed, &gone, Some(&card));
        let new = row(json!({"id": "u2", "displayName": "Bob"}));
        preview.add(&proposed, &new, None);
        assert_eq!(preview.status.changes, 1);
        assert_eq!(
            preview.status.samples[0].before.as_deref(),
            Some("deactivated")
        );
        assert_eq!(preview.status.samples[0].after.as_deref(), Some("deleted"));
        assert_eq!(preview.cards_created, 1);
        assert_eq!(preview.cards_changed, 0);
    }

    #[test]
    fn users_the_proposed_uid_cannot_map_are_counted_as_unmappable() {
        let proposed = rules(json!({"uid": {"source": "employee_id"}}));
        let mut preview = Preview::new(&proposed, &selected());
        let ada = row(json!({"id": "u1", "displayName": "Ada"}));
        preview.add(
            &proposed,
            &ada,
            Some(&card_of(&ada, &FieldRules::default())),
        );
        assert_eq!(preview.unmappable, 1);
        assert_eq!(preview.cards_changed, 0);
    }
}
