//! Documents of claims and proposals: an upload in two steps around the streaming of its
//! content, a download, a list, and the links to the attachment digests an application
//! declared.
//!
//! An upload: [`Workflow::start_upload`] answers a retry from the request log, and refuses a
//! document that is too large or whose application the caller cannot see, before any content
//! is read; the edge then checks the streamed content against the declared size and SHA-256
//! (`domain::documents::ContentCheck`); [`Workflow::finish_upload`] writes the content to the
//! document store (never overwriting: the same bytes find their object there), and then, in
//! one transaction that claims the request id and locks the application, checks the
//! application's total again, appends the document row and stores the response. A refused
//! content stores nothing; a concurrent duplicate of the request finds the response of the
//! first.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use subsidy_common::auth::Tenant;
use subsidy_proto::application as pb;

use super::{Begun, Caller, Known, Workflow, op};
use crate::documents::{DocumentStore, object_key};
use crate::domain::ApplicationKind;
use crate::domain::documents::{DOCUMENT_ID_PREFIX, DocumentKind};
use crate::error::ApplicationError;
use crate::storage::{Conn, DocumentRow};
use crate::wire;

/// Most declared attachment digests looked up for one application (as many as may be declared).
const DECLARED_DIGESTS_MAX: usize = crate::domain::ATTACHMENTS_MAX;

/// The document store and the limits of documents.
#[derive(Debug)]
pub struct Documents {
    /// Where the content is.
    pub store: DocumentStore,
    /// Largest document, bytes.
    pub size_bytes_max: i64,
    /// Largest total of one application's documents, bytes.
    pub application_bytes_max: i64,
}

/// The header of an upload, validated.
#[derive(Clone, Debug)]
pub struct UploadHeader {
    /// Claim or proposal.
    pub application_id: String,
    /// Which of the two.
    pub application_kind: ApplicationKind,
    /// What the document is.
    pub kind: DocumentKind,
    /// File name.
    pub file_name: String,
    /// Media type.
    pub media_type: String,
    /// Declared size, bytes (positive).
    pub size_bytes: i64,
    /// Declared SHA-256, lower-case hex.
    pub sha256_hex: String,
}

/// How an upload goes on after its header.
#[derive(Debug)]
pub enum UploadStart {
    /// A retry: the original response, the content need not be read.
    Replay(pb::UploadDocumentResponse),
    /// Read and check the content, then [`Workflow::finish_upload`].
    Accept,
}

/// A document as read, with whether it matches a declared attachment digest.
#[derive(Clone, Debug)]
pub struct DocumentView {
    /// The row.
    pub row: DocumentRow,
    /// Whether its SHA-256 is one the application declared.
    pub attachment_declared: bool,
}

impl DocumentView {
    /// Its wire form.
    pub fn to_proto(&self) -> pb::Document {
        wire::document_to_proto(&self.row, self.attachment_declared)
    }
}

impl Workflow {
    /// This workflow storing documents in `store` within the given limits.
    pub fn with_documents(mut self, documents: Documents) -> Self {
        self.documents = Some(Arc::new(documents));
        self
    }

    fn documents(&self) -> &Documents {
        self.documents
            .as_deref()
            .expect("the service opens its document store before serving")
    }

    /// The attachment digests the application declared (its contract's or its own), and the
    /// owner the caller must be able to see; `NOT_FOUND` when there is no such application
    /// or it belongs to another tenant.
    async fn declared_digests(
        &self,
        conn: &mut Conn,
        kind: ApplicationKind,
        application_id: &str,
        tenant: &Tenant,
    ) -> Result<Vec<String>, ApplicationError> {
        let digests = match kind {
            ApplicationKind::Claim => self
                .store
                .get_claim(conn, application_id)
                .await?
                .filter(|claim| tenant.sees(&claim.enterprise_uscc))
                .map(|claim| {
                    wire::claim_to_proto(&claim, 0)
                        .contract
                        .unwrap_or_default()
                        .attachments
                })
                .ok_or_else(|| ApplicationError::claim_not_found(application_id))?,
            ApplicationKind::Proposal => self
                .store
                .get_proposal(conn, application_id)
                .await?
                .filter(|proposal| tenant.sees(&proposal.applicant_uscc))
                .map(|proposal| wire::decode_attachments(&proposal.attachments))
                .ok_or_else(|| ApplicationError::proposal_not_found(application_id))?,
        };
        Ok(digests
            .into_iter()
            .take(DECLARED_DIGESTS_MAX)
            .map(|digest| digest.sha256_hex)
            .collect())
    }

    /// Answers a retry of an upload, or checks that it may go on: the document within its
    /// limit, the application there and the caller's, its documents within their total.
    pub async fn start_upload(
        &self,
        header: &UploadHeader,
        caller: &Caller,
    ) -> Result<UploadStart, ApplicationError> {
        match self
            .known_request::<pb::UploadDocumentResponse>(caller, op::UPLOAD_DOCUMENT)
            .await?
        {
            Known::Replay(response) => return Ok(UploadStart::Replay(response)),
            Known::InProgress(_) | Known::New => {}
        }
        let limits = self.documents();
        if header.size_bytes > limits.size_bytes_max {
            return Err(ApplicationError::DocumentTooLarge {
                size_bytes_max: limits.size_bytes_max,
            });
        }
        let mut conn = self.store.read().await?;
        self.declared_digests(
            &mut conn,
            header.application_kind,
            &header.application_id,
            &caller.tenant,
        )
        .await?;
        let total = self
            .store
            .documents_size(&mut conn, &header.application_id)
            .await?;
        self.check_total(header, total)?;
        Ok(UploadStart::Accept)
    }

    fn check_total(&self, header: &UploadHeader, total: i64) -> Result<(), ApplicationError> {
        let max = self.documents().application_bytes_max;
        if total.saturating_add(header.size_bytes) > max {
            return Err(ApplicationError::ApplicationDocumentsTooLarge {
                application_id: header.application_id.clone(),
                documents_bytes_max: max,
            });
        }
        Ok(())
    }

    /// Stores checked content (`content` has the header's size and SHA-256) and records the
    /// document; see the module's header.
    pub async fn finish_upload(
        &self,
        header: UploadHeader,
        content: Vec<u8>,
        caller: &Caller,
    ) -> Result<pb::UploadDocumentResponse, ApplicationError> {
        assert_eq!(
            content.len() as u64,
            header.size_bytes as u64,
            "the edge checked the content against its declared size"
        );
        let key = object_key(&header.sha256_hex);
        let stored = self
            .documents()
            .store
            .put_new(&key, Bytes::from(content))
            .await?;
        if stored == crate::documents::Stored::Existing {
            // Content-addressed: an object under this key has this SHA-256, hence this size;
            // a different size means the store was altered behind the service's back.
            let size = self.documents().store.size(&key).await?;
            if size != Some(header.size_bytes as u64) {
                tracing::error!(key, ?size, "a stored object does not match its key");
                return Err(ApplicationError::DocumentCorrupted { document_id: key });
            }
        }
        let mut tx = match self
            .begin_request::<pb::UploadDocumentResponse>(caller, op::UPLOAD_DOCUMENT)
            .await?
        {
            Begun::Replay(response) => return Ok(response),
            Begun::Fresh(tx) => tx,
        };
        // The application's row, locked: concurrent uploads to one application are counted
        // against its total one after the other.
        let declared = match header.application_kind {
            ApplicationKind::Claim => self
                .store
                .lock_claim(&mut tx, &header.application_id)
                .await?
                .filter(|claim| caller.tenant.sees(&claim.enterprise_uscc))
                .map(|claim| {
                    wire::claim_to_proto(&claim, 0)
                        .contract
                        .unwrap_or_default()
                        .attachments
                })
                .ok_or_else(|| ApplicationError::claim_not_found(&header.application_id))?,
            ApplicationKind::Proposal => self
                .store
                .lock_proposal(&mut tx, &header.application_id)
                .await?
                .filter(|proposal| caller.tenant.sees(&proposal.applicant_uscc))
                .map(|proposal| wire::decode_attachments(&proposal.attachments))
                .ok_or_else(|| ApplicationError::proposal_not_found(&header.application_id))?,
        };
        let total = self
            .store
            .documents_size(&mut tx, &header.application_id)
            .await?;
        self.check_total(&header, total)?;
        let now_us = self.store.now_us(&mut tx).await?;
        let row = DocumentRow {
            document_id: format!("{DOCUMENT_ID_PREFIX}{}", uuid::Uuid::now_v7()),
            application_id: header.application_id,
            kind: header.kind,
            file_name: header.file_name,
            media_type: header.media_type,
            size_bytes: header.size_bytes,
            sha256_hex: header.sha256_hex,
            object_key: key,
            uploaded_by: caller.actor.clone(),
            uploaded_us: now_us,
        };
        self.store.insert_document(&mut tx, &row).await?;
        self.audit(
            &mut tx,
            caller,
            &[&row.application_id, &row.document_id],
            now_us,
        )
        .await?;
        let attachment_declared = declared
            .iter()
            .any(|digest| digest.sha256_hex == row.sha256_hex);
        let response = pb::UploadDocumentResponse {
            document: Some(wire::document_to_proto(&row, attachment_declared)),
        };
        self.finish_request(tx, caller, response).await
    }

    /// A document the caller may see; `NOT_FOUND` otherwise.
    pub async fn document(
        &self,
        document_id: &str,
        tenant: &Tenant,
    ) -> Result<DocumentView, ApplicationError> {
        let not_found = || ApplicationError::DocumentNotFound {
            document_id: document_id.to_owned(),
        };
        let mut conn = self.store.read().await?;
        let row = self
            .store
            .get_document(&mut conn, document_id)
            .await?
            .ok_or_else(not_found)?;
        let kind = ApplicationKind::of(&row.application_id).ok_or_else(not_found)?;
        let declared = match self
            .declared_digests(&mut conn, kind, &row.application_id, tenant)
            .await
        {
            Ok(declared) => declared,
            Err(
                ApplicationError::ClaimNotFound { .. } | ApplicationError::ProposalNotFound { .. },
            ) => {
                return Err(not_found());
            }
            Err(error) => return Err(error),
        };
        let attachment_declared = declared.contains(&row.sha256_hex);
        Ok(DocumentView {
            row,
            attachment_declared,
        })
    }

    /// The content of a document, as it streams from the store.
    pub async fn document_content(
        &self,
        document: &DocumentRow,
    ) -> Result<
        BoxStream<'static, Result<Bytes, crate::documents::DocumentStoreError>>,
        ApplicationError,
    > {
        match self.documents().store.get(&document.object_key).await {
            Ok(stream) => Ok(stream),
            Err(crate::documents::DocumentStoreError::Missing(_)) => {
                Err(ApplicationError::DocumentCorrupted {
                    document_id: document.document_id.clone(),
                })
            }
            Err(error) => Err(error.into()),
        }
    }

    /// At most `limit` documents of an application the caller may see after `after`, oldest
    /// first.
    pub async fn documents_of(
        &self,
        kind: ApplicationKind,
        application_id: &str,
        after: Option<(i64, String)>,
        limit: i64,
        tenant: &Tenant,
    ) -> Result<Vec<DocumentView>, ApplicationError> {
        let mut conn = self.store.read().await?;
        let declared = self
            .declared_digests(&mut conn, kind, application_id, tenant)
            .await?;
        let rows = self
            .store
            .list_documents(&mut conn, application_id, after, limit)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| DocumentView {
                attachment_declared: declared.contains(&row.sha256_hex),
                row,
            })
            .collect())
    }

    /// For each digest an application declared, the first document uploaded with it.
    pub async fn attachment_documents(
        &self,
        application_id: &str,
        declared: &[String],
    ) -> Result<Vec<pb::AttachmentDocument>, ApplicationError> {
        let mut conn = self.store.read().await?;
        let declared: Vec<String> = declared
            .iter()
            .take(DECLARED_DIGESTS_MAX)
            .cloned()
            .collect();
        Ok(self
            .store
            .documents_with_digests(&mut conn, application_id, &declared)
            .await?
            .into_iter()
            .map(|(sha256_hex, document_id)| pb::AttachmentDocument {
                sha256_hex,
                document_id,
            })
            .collect())
    }
}
