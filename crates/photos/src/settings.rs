//! The `[photos]` section: where images are stored, the size rounds download, and how long a
//! freshly stored image is safe from the sweep.

use crate::PhotoStoreError;
use cardsync_config::Validate;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// The HD sizes Graph serves (`/users/{id}/photos/{n}x{n}/$value`).
pub const GRAPH_SIZES: [u32; 9] = [48, 64, 96, 120, 240, 360, 432, 504, 648];

/// Photo settings (`[photos]`).
#[derive(Debug, Clone, Deserialize)]
pub struct PhotoSettings {
    /// Where images live: a directory path or `file:///dir` (the default), `s3://bucket/prefix`
    /// (feature `s3`) or `az://container/prefix` (feature `azure`).
    pub url: String,
    /// The square size rounds download, one of Graph's HD sizes; a photo uploaded smaller is
    /// downloaded as it is.
    pub size: u32,
    /// An image younger than this is never swept, even unreferenced: a round stores an image
    /// before the snapshot row that names it is saved.
    #[serde(deserialize_with = "cardsync_config::duration::deserialize")]
    pub sweep_grace: Duration,
}

impl Validate for PhotoSettings {
    fn validate(&self, problems: &mut Vec<String>) {
        if let Err(error) = self.location() {
            problems.push(format!("photos.url: {error}"));
        }
        if !GRAPH_SIZES.contains(&self.size) {
            problems.push(format!(
                "photos.size: must be one of Graph's photo sizes {GRAPH_SIZES:?}"
            ));
        }
        if self.sweep_grace < Duration::from_secs(60) {
            problems.push("photos.sweep_grace: must be at least 60s".into());
        }
    }
}

/// A parsed `photos.store`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A local directory.
    Directory(std::path::PathBuf),
    /// An S3 bucket URL.
    S3(String),
    /// An Azure Blob container URL.
    Azure(String),
}

impl PhotoSettings {
    /// Where the store is, or why the setting names none this build can open.
    pub fn location(&self) -> Result<StoreLocation, PhotoStoreError> {
        let text = self.url.trim();
        let Some((scheme, rest)) = text.split_once("://") else {
            if text.is_empty() {
                return Err(PhotoStoreError::Open("empty".into()));
            }
            return Ok(StoreLocation::Directory(text.into()));
        };
        match scheme {
            "file" if !rest.is_empty() => Ok(StoreLocation::Directory(rest.into())),
            "s3" | "s3a" => Ok(StoreLocation::S3(text.to_owned())),
            "az" | "azure" | "abfs" | "abfss" => Ok(StoreLocation::Azure(text.to_owned())),
            _ => Err(PhotoStoreError::Open(format!(
                "unsupported scheme {scheme:?} (use a path, file://, s3:// or az://)"
            ))),
        }
        .and_then(StoreLocation::check_built)
    }
}

impl StoreLocation {
    /// Refuses a cloud store this binary was built without.
    fn check_built(self) -> Result<Self, PhotoStoreError> {
        match self {
            #[cfg(not(feature = "s3"))]
            StoreLocation::S3(_) => Err(PhotoStoreError::Open(
                "this build has no S3 support (cargo feature `s3`)".into(),
            )),
            #[cfg(not(feature = "azure"))]
            StoreLocation::Azure(_) => Err(PhotoStoreError::Open(
                "this build has no Azure Blob support (cargo feature `azure`)".into(),
            )),
            other => Ok(other),
        }
    }

    /// Opens it. A local directory is created when missing.
    pub(crate) fn open(self) -> Result<Arc<dyn ObjectStore>, PhotoStoreError> {
        let failed = |e: &dyn std::fmt::Display| PhotoStoreError::Open(e.to_string());
        match self {
            StoreLocation::Directory(dir) => {
                std::fs::create_dir_all(&dir).map_err(|e| failed(&e))?;
                let store = LocalFileSystem::new_with_prefix(&dir).map_err(|e| failed(&e))?;
                Ok(Arc::new(store))
            }
            #[cfg(feature = "s3")]
            StoreLocation::S3(url) => Ok(Arc::new(
                object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(|e| failed(&e))?,
            )),
            #[cfg(feature = "azure")]
            StoreLocation::Azure(url) => Ok(Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(|e| failed(&e))?,
            )),
            #[allow(
                unreachable_patterns,
                reason = "reached in builds without a cloud feature"
            )]
            other => Err(PhotoStoreError::Open(format!("{other:?} is not built in"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_store(store: &str) -> PhotoSettings {
        PhotoSettings {
            url: store.into(),
            size: 240,
            sweep_grace: Duration::from_secs(3600),
        }
    }

    #[test]
    fn a_path_or_file_url_is_a_local_directory() {
        assert_eq!(
            with_store("/var/lib/photos").location().unwrap(),
            StoreLocation::Directory("/var/lib/photos".into())
        );
        assert_eq!(
            with_store("file:///var/lib/photos").location().unwrap(),
            StoreLocation::Directory("/var/lib/photos".into())
        );
    }

    #[test]
    fn bad_stores_sizes_and_graces_are_each_reported() {
        let mut settings = with_store("ftp://x");
        settings.size = 100;
        settings.sweep_grace = Duration::from_secs(1);
        let mut problems = Vec::new();
        settings.validate(&mut problems);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("photos.url"));
    }

    #[cfg(not(feature = "s3"))]
    #[test]
    fn an_s3_store_without_the_feature_says_which_feature() {
        let error = with_store("s3://bucket/photos").location().unwrap_err();
        assert!(error.to_string().contains("`s3`"), "{error}");
    }
}
