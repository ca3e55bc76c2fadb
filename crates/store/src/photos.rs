//! Which stored photo images rows still reference: the image sweep deletes only images that no
//! card and no snapshot row names (a snapshot row may name an image whose card command is still
//! on its way).

use crate::StoreError;
use sqlx::PgPool;
use std::collections::HashSet;

/// A stored image as a row names it: its content hash and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhotoImage {
    /// Lowercase hex SHA-256 of the bytes: the object's key in the store.
    pub sha256: String,
    /// e.g. `image/jpeg`.
    pub content_type: String,
}

impl PhotoImage {
    /// The image a pair of nullable columns name, when both are set.
    pub fn from_columns(sha256: Option<String>, content_type: Option<String>) -> Option<Self> {
        Some(Self {
            sha256: sha256?,
            content_type: content_type?,
        })
    }
}

/// The hashes among `hashes` that a card or a snapshot row references, in any tenant.
pub async fn referenced(pool: &PgPool, hashes: &[String]) -> Result<HashSet<String>, StoreError> {
    if hashes.is_empty() {
        return Ok(HashSet::new());
    }
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT photo_sha256 FROM cards WHERE photo_sha256 = ANY($1)
         UNION
         SELECT photo_sha256 FROM directory_users WHERE photo_sha256 = ANY($1)",
    )
    .bind(hashes)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(hash,)| hash).collect())
}
