//! The photos pass. Delta never reports photo changes, so photos are checked on their own: the
//! users a round created, and on scheduled rounds a budgeted slice of the users checked longest
//! ago; a changed etag becomes a new version and a command carrying the `photo` field.

use super::{Round, RoundError, Rounds};
use cardsync_proto as proto;
use cardsync_store::directory::{self, UserRow};
use cardsync_store::photos::PhotoImage;
use time::OffsetDateTime;

impl Rounds {
    /// Checks photos of users created this round and, on scheduled rounds only, a budgeted slice
    /// of everyone else, since delta never reports photo changes. Rounds triggered by
    /// notifications skip the slice, so a burst of changes does not cost photo calls.
    pub(super) async fn photos_pass(
        &self,
        round: &mut Round<'_>,
        created: Vec<String>,
    ) -> Result<(), RoundError> {
        let scheduled = round.cause != proto::Cause::Notification;
        let budget = if scheduled {
            i64::from(self.settings.photo_checks_per_round)
        } else {
            0
        };
        let mut candidates = if budget > 0 {
            directory::photo_scan_candidates(&self.pool, round.tenant, budget).await?
        } else {
            Vec::new()
        };
        if !created.is_empty() {
            let mut tx = self.pool.begin().await?;
            let fresh = directory::users(&mut tx, round.tenant, &created).await?;
            tx.commit().await?;
            candidates.extend(fresh.into_values());
        }
        let mut checked: Vec<(String, Option<String>)> = Vec::new();
        let mut changed = Vec::new();
        let now = OffsetDateTime::now_utc();
        for row in candidates {
            if checked.iter().any(|(id, _)| *id == row.user_id) {
                continue;
            }
            // Some("") = checked and no photo; None = never checked (the card's photo is left alone).
            let meta = round
                .read(self.graph.photo_meta(&round.connection, &row.user_id))
                .await?;
            let etag = Some(
                meta.as_ref()
                    .map(|meta| meta.etag.clone().unwrap_or_else(|| "present".into()))
                    .unwrap_or_default(),
            );
            // Learning that a user never had a photo changes nothing on the card.
            let news = etag != row.photo_etag
                && !(row.photo_etag.is_none() && etag.as_deref() == Some(""));
            if news {
                // The image is stored before the row that names it is saved and its command
                // sent, so a card never names an image the store lacks.
                let photo = match meta.as_ref().filter(|_| etag.as_deref() != Some("")) {
                    Some(meta) => self.store_photo(round, &row.user_id, meta.width).await?,
                    None => None,
                };
                checked.push((row.user_id.clone(), None));
                changed.push(UserRow {
                    photo_etag: etag,
                    photo,
                    observed_at: now,
                    ..row
                });
            } else {
                checked.push((row.user_id.clone(), etag));
            }
        }
        round.report.changed += changed.len() as u64;
        round.report.unannounced += changed.len() as u64;
        self.save_and_emit(round, changed).await?;
        directory::mark_photos_checked(&self.pool, round.tenant, &checked).await?;
        Ok(())
    }

    /// Downloads a user's photo at the configured size (the largest one when the upload is
    /// smaller: Graph serves no size above the upload) and stores it; `None` when the photo
    /// went away between the metadata and the download.
    async fn store_photo(
        &self,
        round: &Round<'_>,
        user_id: &str,
        width: Option<u32>,
    ) -> Result<Option<PhotoImage>, RoundError> {
        let size = width
            .is_none_or(|w| w >= self.photo_size)
            .then_some(self.photo_size);
        let download = round
            .read(self.graph.photo_bytes(&round.connection, user_id, size))
            .await?;
        let download = match download {
            None if size.is_some() => {
                round
                    .read(self.graph.photo_bytes(&round.connection, user_id, None))
                    .await?
            }
            other => other,
        };
        let Some((bytes, content_type)) = download else {
            return Ok(None);
        };
        round.check()?;
        Ok(Some(self.photos.put(bytes, &content_type).await?))
    }
}
