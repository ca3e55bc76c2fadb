//! Profile photo images, content-addressed: an image is stored under the SHA-256 of its bytes,
//! so storing the same photo twice is one object, a card names its image by that hash, and an
//! image no row names any more can be swept away (see [`sweep`]).
//!
//! The store is an [`object_store::ObjectStore`]: a local directory by default, S3 or Azure
//! Blob Storage when the crate is built with the `s3` or `azure` feature and `[photos] url`
//! names a bucket or container (credentials from the cloud's usual environment variables,
//! never from the settings file).

mod settings;
mod sweep;

pub use settings::{PhotoSettings, StoreLocation};
pub use sweep::{SweepError, SweepReport, sweep};

use bytes::Bytes;
use cardsync_store::photos::PhotoImage;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::sync::Arc;

/// The key prefix of every image.
const PREFIX: &str = "photos/sha256";

/// A failure of the photo store.
#[derive(Debug, thiserror::Error)]
pub enum PhotoStoreError {
    /// The configured store could not be opened.
    #[error("cannot open the photo store: {0}")]
    Open(String),
    /// The store refused or failed an operation.
    #[error("photo store {operation} failed")]
    Store {
        /// `put`, `get`, `list` or `delete`.
        operation: &'static str,
        /// Why.
        #[source]
        source: object_store::Error,
    },
    /// A hash that is not 64 lowercase hex digits.
    #[error("not a SHA-256 content hash")]
    BadHash,
}

/// Where photo images live; cheap to clone.
#[derive(Clone)]
pub struct PhotoStore {
    store: Arc<dyn ObjectStore>,
}

impl fmt::Debug for PhotoStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PhotoStore")
            .field("store", &self.store.to_string())
            .finish()
    }
}

impl PhotoStore {
    /// Opens the store the settings name (creating a local directory if missing).
    pub fn open(settings: &PhotoSettings) -> Result<Self, PhotoStoreError> {
        Ok(Self {
            store: settings.location()?.open()?,
        })
    }

    /// A store over any [`ObjectStore`] (tests use the in-memory one).
    pub fn with_store(store: Arc<dyn ObjectStore>) -> Self {
        Self { store }
    }

    /// Stores an image and returns how rows name it. Storing bytes already present writes the
    /// same object again, which is harmless: the key is the content.
    pub async fn put(
        &self,
        bytes: Bytes,
        content_type: &str,
    ) -> Result<PhotoImage, PhotoStoreError> {
        let sha256 = hex(&Sha256::digest(&bytes));
        self.store
            .put(&key(&sha256), PutPayload::from_bytes(bytes))
            .await
            .map_err(|source| PhotoStoreError::Store {
                operation: "put",
                source,
            })?;
        Ok(PhotoImage {
            sha256,
            content_type: content_type.to_owned(),
        })
    }

    /// The image's bytes, `None` when the store has no such image.
    pub async fn get(&self, sha256: &str) -> Result<Option<Bytes>, PhotoStoreError> {
        if !is_hash(sha256) {
            return Err(PhotoStoreError::BadHash);
        }
        match self.store.get(&key(sha256)).await {
            Ok(result) => result
                .bytes()
                .await
                .map(Some)
                .map_err(|source| PhotoStoreError::Store {
                    operation: "get",
                    source,
                }),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(PhotoStoreError::Store {
                operation: "get",
                source,
            }),
        }
    }

    pub(crate) fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }
}

/// The object key of an image.
fn key(sha256: &str) -> Path {
    Path::from(format!("{PREFIX}/{sha256}"))
}

/// The hash an object key names, `None` for anything else under the prefix.
fn hash_of(path: &Path) -> Option<String> {
    let name = path.filename()?;
    is_hash(name).then(|| name.to_owned())
}

/// Whether `text` is 64 lowercase hex digits.
pub fn is_hash(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn an_image_is_stored_under_its_hash_and_read_back() {
        let store = PhotoStore::with_store(Arc::new(InMemory::new()));
        let image = store
            .put(Bytes::from_static(b"abc"), "image/png")
            .await
            .unwrap();
        assert_eq!(
            image.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(image.content_type, "image/png");
        let bytes = store.get(&image.sha256).await.unwrap();
        assert_eq!(bytes.as_deref(), Some(&b"abc"[..]));
        assert_eq!(store.get(&"0".repeat(64)).await.unwrap(), None);
        assert!(matches!(
            store.get("../etc/passwd").await,
            Err(PhotoStoreError::BadHash)
        ));
    }

    #[test]
    fn only_lowercase_hex_of_the_right_length_is_a_hash() {
        assert!(is_hash(&"a".repeat(64)));
        assert!(!is_hash(&"A".repeat(64)));
        assert!(!is_hash(&"a".repeat(63)));
        assert!(!is_hash("../x"));
    }
}
