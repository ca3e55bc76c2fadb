//! The photos pass. Delta never reports photo changes, so photos are checked on their own: the
//! users a round created, and, when the tenant's photo check is due (its own cadence, whatever
//! the round's cause), the users checked longest ago, all within one budget of Graph requests;
//! a changed etag becomes a new version and a command carrying the `photo` field.

use super::{Round, RoundError, Rounds};
use cardsync_store::directory::{self, UserRow};
use cardsync_store::photos::PhotoImage;
use futures_util::future::try_join_all;
use std::collections::HashSet;
use time::OffsetDateTime;

/// Photo requests one check has in flight at once: a check of a large tenant takes seconds
/// instead of minutes of the tenant's lease, well inside the tenant's Graph budget.
const CONCURRENT_READS: usize = 16;

/// Why a round checks photos beyond its new users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PhotoCheck {
    /// The tenant's cadence, a full round, a reconcile: the photos not checked for
    /// `photo_recheck_after`.
    Due,
    /// An operator's request (Sync Now): any photo, longest unchecked first.
    Asked,
}

impl Rounds {
    /// Checks the photos of the users created this round and, on a `check`, of the users not
    /// checked for its recheck age, longest ago first; every request counts against
    /// `photo_check_budget` (a first import's users beyond it come first at the next check).
    /// Records the tenant's check when there was one.
    pub(super) async fn photos_pass(
        &self,
        round: &mut Round<'_>,
        created: Vec<String>,
        check: Option<PhotoCheck>,
    ) -> Result<(), RoundError> {
        let budget = u64::from(self.settings.photo_check_budget);
        let mut candidates = Vec::new();
        if !created.is_empty() {
            let mut tx = self.pool.begin().await?;
            let fresh = directory::users(&mut tx, round.tenant, &created).await?;
            tx.commit().await?;
            candidates.extend(fresh.into_values());
        }
        if let Some(check) = check {
            let limit = i64::try_from(budget).unwrap_or(i64::MAX);
            let recheck = match check {
                PhotoCheck::Due => self.settings.photo_recheck_after,
                PhotoCheck::Asked => std::time::Duration::ZERO,
            };
            candidates.extend(
                directory::photo_scan_candidates(&self.pool, round.tenant, limit, recheck).await?,
            );
        }
        let mut seen = HashSet::new();
        candidates.retain(|row| seen.insert(row.user_id.clone()));

        // Some("") = checked and no photo; None = never checked (the card's photo is left alone).
        let mut checked: Vec<(String, Option<String>)> = Vec::new();
        let mut changed = Vec::new();
        let now = OffsetDateTime::now_utc();
        let mut spent = 0u64;
        let mut rest = candidates.into_iter();
        while spent < budget {
            // A user whose photo changed costs two requests (metadata, download): a batch fits
            // what is left of the budget unless every photo changed and came back smaller.
            let room = usize::try_from((budget - spent) / 2).unwrap_or(usize::MAX);
            let batch: Vec<UserRow> = rest
                .by_ref()
                .take(room.clamp(1, CONCURRENT_READS))
                .collect();
            if batch.is_empty() {
                break;
            }
            spent += batch.len() as u64;
            let reading: &Round<'_> = round;
            let metas =
                try_join_all(batch.iter().map(|row| {
                    reading.read(self.graph.photo_meta(&reading.connection, &row.user_id))
                }))
                .await?;
            let mut news = Vec::new();
            for (row, meta) in batch.into_iter().zip(metas) {
                let etag = Some(
                    meta.as_ref()
                        .map(|meta| meta.etag.clone().unwrap_or_else(|| "present".into()))
                        .unwrap_or_default(),
                );
                // Learning that a user never had a photo changes nothing on the card.
                if etag != row.photo_etag
                    && !(row.photo_etag.is_none() && etag.as_deref() == Some(""))
                {
                    let width = meta
                        .filter(|_| etag.as_deref() != Some(""))
                        .map(|meta| meta.width);
                    news.push((row, etag, width));
                } else {
                    checked.push((row.user_id, etag));
                }
            }
            // The image is stored before the row that names it is saved and its command sent,
            // so a card never names an image the store lacks.
            let downloads = try_join_all(news.iter().map(|(row, _, width)| async move {
                match width {
                    Some(width) => self.store_photo(reading, &row.user_id, *width).await,
                    None => Ok((None, 0)),
                }
            }))
            .await?;
            for ((row, etag, _), (photo, requests)) in news.into_iter().zip(downloads) {
                spent += requests;
                checked.push((row.user_id.clone(), None));
                changed.push(UserRow {
                    photo_etag: etag,
                    photo,
                    observed_at: now,
                    ..row
                });
            }
        }
        round.report.changed += changed.len() as u64;
        if !round.first_sync {
            round.report.unannounced += changed.len() as u64;
        }
        self.save_and_emit(round, changed).await?;
        directory::mark_photos_checked(&self.pool, round.tenant, &checked).await?;
        if check.is_some() {
            cardsync_store::checks::record_photos_checked(&self.pool, round.tenant).await?;
        }
        Ok(())
    }

    /// Downloads a user's photo at the configured size (the largest one when the upload is
    /// smaller: Graph serves no size above the upload) and stores it; `None` when the photo
    /// went away between the metadata and the download. Also says how many requests it took.
    async fn store_photo(
        &self,
        round: &Round<'_>,
        user_id: &str,
        width: Option<u32>,
    ) -> Result<(Option<PhotoImage>, u64), RoundError> {
        let size = width
            .is_none_or(|w| w >= self.photo_size)
            .then_some(self.photo_size);
        let mut requests = 1;
        let download = round
            .read(self.graph.photo_bytes(&round.connection, user_id, size))
            .await?;
        let download = match download {
            None if size.is_some() => {
                requests += 1;
                round
                    .read(self.graph.photo_bytes(&round.connection, user_id, None))
                    .await?
            }
            other => other,
        };
        let Some((bytes, content_type)) = download else {
            return Ok((None, requests));
        };
        round.check()?;
        Ok((Some(self.photos.put(bytes, &content_type).await?), requests))
    }
}
