//! The image sweep: deletes stored images that no card and no snapshot row names any more.
//!
//! Safe against a round that has just stored an image whose snapshot row is not saved yet: an
//! image younger than the grace period is never deleted, and a round saves its rows within
//! seconds of storing (the grace is an hour by default). A card that came to name an image after
//! the reference check would have a snapshot row naming it first, and that row is saved before
//! its command is sent, so the check sees it.

use crate::{PREFIX, PhotoStore, PhotoStoreError, hash_of};
use futures_util::TryStreamExt as _;
use object_store::path::Path;
use sqlx::PgPool;
use std::time::Duration;
use time::OffsetDateTime;

/// Images are checked against the rows this many at a time.
const PAGE: usize = 500;

/// What a sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    /// Images looked at.
    pub examined: u64,
    /// Images younger than the grace period, kept unchecked.
    pub young: u64,
    /// Images some row references, kept.
    pub referenced: u64,
    /// Images deleted.
    pub deleted: u64,
}

/// A failure of the sweep.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] PhotoStoreError),
    /// The reference check failed.
    #[error("photo reference check failed")]
    References(#[from] cardsync_store::StoreError),
}

/// Deletes every image older than `grace` that no card or snapshot row references.
pub async fn sweep(
    photos: &PhotoStore,
    pool: &PgPool,
    grace: Duration,
) -> Result<SweepReport, SweepError> {
    let cutoff = OffsetDateTime::now_utc().unix_timestamp()
        - i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
    let store = photos.inner();
    let mut listing = store.list(Some(&Path::from(PREFIX)));
    let mut report = SweepReport::default();
    let mut page: Vec<(String, Path)> = Vec::with_capacity(PAGE);
    loop {
        let next = listing
            .try_next()
            .await
            .map_err(|source| PhotoStoreError::Store {
                operation: "list",
                source,
            })?;
        if let Some(meta) = &next {
            report.examined += 1;
            if meta.last_modified.timestamp() > cutoff {
                report.young += 1;
            } else if let Some(hash) = hash_of(&meta.location) {
                page.push((hash, meta.location.clone()));
            }
        }
        if page.len() >= PAGE || (next.is_none() && !page.is_empty()) {
            let hashes: Vec<String> = page.iter().map(|(hash, _)| hash.clone()).collect();
            let kept = cardsync_store::photos::referenced(pool, &hashes).await?;
            for (hash, location) in page.drain(..) {
                if kept.contains(&hash) {
                    report.referenced += 1;
                    continue;
                }
                match object_store::ObjectStoreExt::delete(store.as_ref(), &location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => report.deleted += 1,
                    Err(source) => {
                        return Err(PhotoStoreError::Store {
                            operation: "delete",
                            source,
                        }
                        .into());
                    }
                }
                tracing::debug!(sha256 = %hash, "photo image swept");
            }
        }
        if next.is_none() {
            return Ok(report);
        }
    }
}
