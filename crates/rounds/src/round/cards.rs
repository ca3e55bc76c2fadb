//! The reconcile's cards pass: after a full enumeration brought the snapshot up to date, every
//! user of the snapshot is compared with its card, page by page, and each card that drifted
//! gets a command at a fresh version of its user (the sequence the delta rounds use), so the
//! card-writer applies it over whatever older command is still about.

use super::{Round, RoundError, Rounds};
use crate::drift::drift;
use cardsync_store::cards::{self, Card};
use cardsync_store::directory::{self, UserRow};
use std::collections::HashMap;
use time::OffsetDateTime;

/// Snapshot rows compared per page: bounds the reconcile's memory whatever the tenant's size.
const PAGE: i64 = 1000;

impl Rounds {
    /// Compares the snapshot with the cards and repairs what drifted. Users this round already
    /// sent a command for are skipped: their card is about to change.
    pub(super) async fn cards_pass(&self, round: &mut Round<'_>) -> Result<(), RoundError> {
        let mut after: Option<String> = None;
        loop {
            round.check()?;
            let rows =
                directory::users_after(&self.pool, round.tenant, after.as_deref(), PAGE).await?;
            let Some(last) = rows.last() else {
                return Ok(());
            };
            after = Some(last.user_id.clone());
            let ids: Vec<String> = rows.iter().map(|row| row.user_id.clone()).collect();
            let by_user: HashMap<String, Card> = cards::of_users(&self.pool, round.tenant, &ids)
                .await?
                .into_iter()
                .filter_map(|card| Some((card.user_id.clone()?, card)))
                .collect();
            let now = OffsetDateTime::now_utc();
            let mut repairs = Vec::new();
            for row in rows {
                if round
                    .emitted
                    .as_ref()
                    .is_some_and(|sent| sent.contains(&row.user_id))
                {
                    continue;
                }
                let card = by_user.get(&row.user_id);
                let Some(kind) = drift(&row, card, &round.rules) else {
                    continue;
                };
                self.metrics.drift.with_label_values(&[kind.as_str()]).inc();
                tracing::debug!(tenant = %round.tenant, user_id = %row.user_id, drift = kind.as_str(), "card drifted");
                // A card exists, so removing or deactivating it is a command even if no upsert
                // of this user was ever confirmed (a card linked by email, say).
                let emitted_action = match (card, row.emitted_action.as_deref()) {
                    (Some(_), None | Some("delete")) => Some("upsert".to_owned()),
                    (_, action) => action.map(str::to_owned),
                };
                repairs.push(UserRow {
                    emitted_action,
                    observed_at: now,
                    ..row
                });
            }
            round.report.repaired += repairs.len() as u64;
            self.save_and_emit(round, repairs).await?;
        }
    }
}
