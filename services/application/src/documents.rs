//! The document store: the content of uploaded documents in object storage (`object_store`),
//! a local directory by default and an S3-compatible bucket in production.
//!
//! The protocol, stated once:
//! - Content is addressed by its SHA-256: the object key is `sha256/ab/abcd…` (the first two
//!   hex digits, then all 64), under the configured prefix.
//! - Content is written only after its digest and size were checked against the declared ones,
//!   and with `PutMode::Create`, so an object is never overwritten: the same bytes uploaded again
//!   find their object there (`AlreadyExists`) and reuse it.
//! - The database rows (`documents`) say which application holds which object; a row is written
//!   after its object, in the transaction that stores the upload's response. A crash between the
//!   two leaves an object no row names, which a retry of the same upload reuses; nothing is ever
//!   deleted, so no row ever names a missing object.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::settings::{Location, Settings};

/// A failure of the document store.
#[derive(Debug, thiserror::Error)]
pub enum DocumentStoreError {
    /// The store is not configured usably (a directory that cannot be created, a bad S3 setting).
    #[error("the document store cannot be opened: {0}")]
    Open(String),
    /// The store did not answer or refused (network, permissions, a full disk).
    #[error("the document store is unavailable")]
    Unavailable(#[source] object_store::Error),
    /// The object a document row names is not there (deleted behind the service's back).
    #[error("a stored document is missing")]
    Missing(#[source] object_store::Error),
}

/// What a write found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// The object was written now.
    Created,
    /// An object with this content was there already and was reused.
    Existing,
}

/// The object key of content with SHA-256 `sha256_hex` (64 lower-case hex digits).
pub fn object_key(sha256_hex: &str) -> String {
    assert_eq!(sha256_hex.len(), 64, "a SHA-256 in hex has 64 digits");
    format!("sha256/{}/{sha256_hex}", &sha256_hex[..2])
}

/// The document store of the service.
#[derive(Clone, Debug)]
pub struct DocumentStore {
    objects: Arc<dyn ObjectStore>,
}

impl DocumentStore {
    /// Opens the store `settings` configure (creating a local directory when missing).
    pub fn open(settings: &Settings) -> Result<DocumentStore, DocumentStoreError> {
        let location =
            Location::parse(&settings.documents_url).map_err(DocumentStoreError::Open)?;
        let objects: Arc<dyn ObjectStore> = match location {
            Location::Directory(dir) => {
                std::fs::create_dir_all(&dir).map_err(|error| {
                    DocumentStoreError::Open(format!("cannot create {}: {error}", dir.display()))
                })?;
                let local = LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|error| DocumentStoreError::Open(error.to_string()))?;
                Arc::new(local)
            }
            Location::S3 { bucket, prefix } => {
                // The AWS_* environment first, then the service's own settings where given.
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                if !settings.documents_s3_endpoint.is_empty() {
                    builder = builder.with_endpoint(&settings.documents_s3_endpoint);
                }
                if !settings.documents_s3_region.is_empty() {
                    builder = builder.with_region(&settings.documents_s3_region);
                }
                if !settings.documents_s3_access_key_id.is_empty() {
                    builder = builder.with_access_key_id(&settings.documents_s3_access_key_id);
                }
                if !settings.documents_s3_secret_access_key.is_empty() {
                    builder =
                        builder.with_secret_access_key(&settings.documents_s3_secret_access_key);
                }
                if settings.documents_s3_allow_http {
                    builder = builder.with_allow_http(true);
                }
                let s3 = builder
                    .build()
                    .map_err(|error| DocumentStoreError::Open(error.to_string()))?;
                if prefix.is_empty() {
                    Arc::new(s3)
                } else {
                    Arc::new(PrefixStore::new(s3, prefix.as_str()))
                }
            }
        };
        Ok(DocumentStore { objects })
    }

    /// Writes `content` under `key` unless an object is there already (never overwriting).
    pub async fn put_new(&self, key: &str, content: Bytes) -> Result<Stored, DocumentStoreError> {
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .objects
            .put_opts(&Path::from(key), PutPayload::from_bytes(content), options)
            .await
        {
            Ok(_) => Ok(Stored::Created),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Stored::Existing),
            Err(error) => Err(DocumentStoreError::Unavailable(error)),
        }
    }

    /// The content under `key`, as it streams from the store.
    pub async fn get(
        &self,
        key: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, DocumentStoreError>>, DocumentStoreError> {
        match self.objects.get(&Path::from(key)).await {
            Ok(result) => Ok(result
                .into_stream()
                .map_err(DocumentStoreError::Unavailable)
                .boxed()),
            Err(error @ object_store::Error::NotFound { .. }) => {
                Err(DocumentStoreError::Missing(error))
            }
            Err(error) => Err(DocumentStoreError::Unavailable(error)),
        }
    }

    /// The size of the object under `key`; `None` when there is none.
    pub async fn size(&self, key: &str) -> Result<Option<u64>, DocumentStoreError> {
        match self.objects.head(&Path::from(key)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(DocumentStoreError::Unavailable(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_locations_are_directories_file_urls_or_s3_buckets() {
        // Proves the accepted forms of application.documents_url and the refusals.
        assert_eq!(
            Location::parse("data/documents"),
            Ok(Location::Directory("data/documents".into()))
        );
        assert_eq!(
            Location::parse("file:///srv/documents"),
            Ok(Location::Directory("/srv/documents".into()))
        );
        assert_eq!(
            Location::parse("s3://subsidy-docs/prod/"),
            Ok(Location::S3 {
                bucket: "subsidy-docs".into(),
                prefix: "prod".into()
            })
        );
        assert_eq!(
            Location::parse("s3://subsidy-docs"),
            Ok(Location::S3 {
                bucket: "subsidy-docs".into(),
                prefix: String::new()
            })
        );
        assert!(Location::parse("s3://A").is_err());
        assert!(Location::parse("file://relative").is_err());
        assert!(Location::parse("gs://bucket").is_err());
        assert!(Location::parse("").is_err());
        assert_eq!(
            object_key(&"ab".repeat(32)),
            format!("sha256/ab/{}", "ab".repeat(32))
        );
    }
}
