//! The users pass: follow the users delta from the stored link (or enumerate everyone, finding
//! users deleted while nobody looked), merge each page into the snapshot under the fence, and
//! emit the page's changes before reading the next; and the re-read of named users (per-user
//! and per-group sync), which pushes their state even when nothing changed.

use super::emit::with_versions;
use super::{Round, RoundError, Rounds};
use crate::lease::Collection;
use crate::snapshot;
use cardsync_graph::{GraphError, PageLink};
use cardsync_proto as proto;
use cardsync_store::directory::{self, Presence, UserRow};
use serde_json::Value;
use std::collections::BTreeSet;
use time::OffsetDateTime;

/// Graph's limit of `id eq` terms in one filtered delta query.
const IDS_PER_QUERY: usize = 50;

impl Rounds {
    /// Follows the users delta to its end; returns the users first seen (their photos are
    /// checked this round), none after a full enumeration (the budgeted scan covers those).
    pub(super) async fn users_pass(
        &self,
        round: &mut Round<'_>,
        full: bool,
    ) -> Result<Vec<String>, RoundError> {
        let stored = self
            .stored_link(round.tenant, Collection::Users, full)
            .await?;
        let start = self.users_start_url(round);
        round.report.full = stored.is_none();
        // An initial enumeration is bulk work: it must not delay other tenants' live updates.
        round.bulk |= round.report.full;
        let mut minimal = stored.is_some();
        let mut url = stored.unwrap_or_else(|| start.clone());
        let mut seen = BTreeSet::new();
        let mut restarted = false;
        let mut created = Vec::new();
        let final_link = loop {
            let Some(page) = round
                .delta_page(&self.graph, &url, minimal, !restarted)
                .await?
            else {
                // The token expired or Graph asks for a resync: enumerate everything again.
                restarted = true;
                round.report.full = true;
                round.bulk = true;
                minimal = false;
                seen.clear();
                url = start.clone();
                self.metrics.resyncs.inc();
                continue;
            };
            if round.report.full {
                seen.extend(
                    page.items
                        .iter()
                        .filter(|item| item.get("@removed").is_none())
                        .filter_map(|item| {
                            item.get("id").and_then(Value::as_str).map(str::to_owned)
                        }),
                );
            }
            created.extend(self.apply_users_page(round, &page.items, false).await?);
            match page.link {
                PageLink::Next(next) => url = next,
                PageLink::Done(done) => break done,
            }
        };
        if round.report.full {
            let now = OffsetDateTime::now_utc();
            let missing = snapshot::vanished(
                directory::present_user_ids(&self.pool, round.tenant).await?,
                &seen,
            );
            let gone: Vec<UserRow> = if missing.is_empty() {
                Vec::new()
            } else {
                let mut tx = self.pool.begin().await?;
                let rows = directory::users(&mut tx, round.tenant, &missing).await?;
                tx.commit().await?;
                rows.into_values()
                    .map(|row| UserRow {
                        presence: Presence::Deleted,
                        observed_at: now,
                        ..row
                    })
                    .collect()
            };
            round.report.changed += gone.len() as u64;
            self.save_and_emit(round, gone).await?;
        }
        round.check()?;
        // Stored once the round's plan is settled (`rail.rs`).
        round.links.push((Collection::Users, final_link.clone()));
        if round.report.full {
            // The stored link now tracks what these rules read: a rules apply or dry run
            // compares later rules with it.
            let select: Vec<String> = round.users_select().into_iter().collect();
            let mut tx = self.pool.begin().await?;
            round.fence(&mut tx).await?;
            directory::record_users_select(&mut tx, round.tenant, &select).await?;
            tx.commit().await?;
        }
        // A full round creates every user: photos come from the budgeted scan instead.
        Ok(if round.report.full {
            Vec::new()
        } else {
            created
        })
    }

    /// Re-reads `ids` through a filtered delta query (50 per request, Graph's limit) and pushes
    /// their state to the cards even when nothing changed.
    pub(super) async fn users_by_id(
        &self,
        round: &mut Round<'_>,
        ids: &[String],
    ) -> Result<(), RoundError> {
        for chunk in ids.chunks(IDS_PER_QUERY) {
            let filter = chunk
                .iter()
                .map(|id| format!("id eq '{}'", id.replace('\'', "''")))
                .collect::<Vec<_>>()
                .join(" or ");
            let mut url = url::Url::parse(&self.users_start_url(round))
                .map_err(|e| GraphError::BadResponse(e.to_string()))?;
            url.query_pairs_mut().append_pair("$filter", &filter);
            let mut next = url.to_string();
            loop {
                let page = round
                    .read(self.graph.delta_page(&round.connection, &next, false))
                    .await?;
                round.report.pages += 1;
                self.apply_users_page(round, &page.items, true).await?;
                match page.link {
                    PageLink::Next(link) => next = link,
                    PageLink::Done(_) => break,
                }
            }
        }
        Ok(())
    }

    /// Merges one page into the snapshot and emits its changes; returns ids of users first seen.
    async fn apply_users_page(
        &self,
        round: &mut Round<'_>,
        items: &[Value],
        force: bool,
    ) -> Result<Vec<String>, RoundError> {
        let ids: Vec<String> = items
            .iter()
            .filter_map(|i| i.get("id").and_then(Value::as_str).map(str::to_owned))
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let now = OffsetDateTime::now_utc();
        let mut tx = self.pool.begin().await?;
        round.fence(&mut tx).await?;
        let mut current = directory::users(&mut tx, round.tenant, &ids).await?;
        let mut changed: Vec<UserRow> = Vec::new();
        let mut created = Vec::new();
        // Items apply in page order; a replayed object merges into the result of the first.
        for item in items {
            let Some(id) = item.get("id").and_then(Value::as_str) else {
                continue;
            };
            let existing = current.get(id);
            if let Some(row) = snapshot::merge_user(
                existing,
                item,
                &round.scope,
                round.filter.as_ref(),
                now,
                force,
            ) {
                if existing.is_none() {
                    created.push(id.to_owned());
                }
                current.insert(id.to_owned(), row.clone());
                changed.retain(|c| c.user_id != id);
                changed.push(row);
            }
        }
        if changed.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let versions = directory::save_users(&mut tx, round.tenant, &changed).await?;
        tx.commit().await?;
        round.report.changed += changed.len() as u64;
        if !round.first_sync
            && (round.cause != proto::Cause::Notification || !round.announced.is_empty())
        {
            round.report.unannounced += changed
                .iter()
                .filter(|row| !round.announced.contains(&row.user_id))
                .count() as u64;
        }
        self.emit(round, &with_versions(changed, &versions)).await?;
        Ok(created)
    }

    /// The initial users delta URL: what the rules map and the filter reads, and what every
    /// round needs.
    fn users_start_url(&self, round: &Round<'_>) -> String {
        let select = round.users_select();
        let select: Vec<&str> = select.iter().map(String::as_str).collect();
        cardsync_graph::delta_start_url(&self.graph.settings().graph_url, "users", &select)
    }
}
