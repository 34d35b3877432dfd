//! `UploadDocument`, `DownloadDocument` and `ListDocuments` at the edge: the upload's header
//! parsed (every violation at once), its content checked against the declared size and SHA-256
//! as it streams (never more than the declared size held), and a download streamed back in
//! chunks of at most 64 KiB, its SHA-256 checked as it goes.

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use sha2::{Digest, Sha256};
use subsidy_common::audit::AuditRecord;
use subsidy_common::auth;
use subsidy_common::edge::Violations;
use subsidy_common::idempotency::fingerprint;
use subsidy_proto::application as pb;
use tonic::{Request, Status, Streaming};

use super::VALIDATED;
use crate::documents::DocumentStoreError;
use crate::domain::documents::{
    ContentCheck, ContentProblem, DOWNLOAD_CHUNK_BYTES_MAX, DocumentKind, is_media_type,
};
use crate::domain::{ApplicationKind, is_file_name, is_sha256_hex};
use crate::error::ApplicationError;
use crate::workflow::{Caller, DocumentView, UploadHeader, UploadStart, Workflow, op};

/// The stream of `DownloadDocument`.
pub(super) type DownloadStream = BoxStream<'static, Result<pb::DownloadDocumentResponse, Status>>;

/// The header of an upload, validated; `None` only after recording a violation.
fn header(v: &mut Violations, header: &pb::UploadDocumentHeader) -> Option<UploadHeader> {
    let application_kind = ApplicationKind::of(&header.application_id);
    if application_kind.is_none() {
        v.add(
            "header.application_id",
            "must be a claim (claim-…) or proposal (proposal-…) identifier",
        );
    }
    let kind = match pb::DocumentKind::try_from(header.kind) {
        Ok(pb::DocumentKind::Contract) => Some(DocumentKind::Contract),
        Ok(pb::DocumentKind::Invoice) => Some(DocumentKind::Invoice),
        Ok(pb::DocumentKind::PaymentProof) => Some(DocumentKind::PaymentProof),
        Ok(pb::DocumentKind::Proposal) => Some(DocumentKind::Proposal),
        Ok(pb::DocumentKind::Other) => Some(DocumentKind::Other),
        Ok(pb::DocumentKind::Unspecified) | Err(_) => {
            v.add(
                "header.kind",
                "must be one of CONTRACT, INVOICE, PAYMENT_PROOF, PROPOSAL or OTHER",
            );
            None
        }
    };
    if !is_file_name(&header.file_name) {
        v.add(
            "header.file_name",
            "must be 1 to 255 characters without directories or control characters",
        );
    }
    if !is_media_type(&header.media_type) {
        v.add(
            "header.media_type",
            "must be a media type such as application/pdf (at most 255 characters)",
        );
    }
    if header.size_bytes <= 0 {
        v.add("header.size_bytes", "must be positive");
    }
    if !is_sha256_hex(&header.sha256_hex) {
        v.add(
            "header.sha256_hex",
            "must be a lower-case hex SHA-256 (64 characters)",
        );
    }
    Some(UploadHeader {
        application_id: header.application_id.clone(),
        application_kind: application_kind?,
        kind: kind?,
        file_name: header.file_name.clone(),
        media_type: header.media_type.clone(),
        size_bytes: header.size_bytes,
        sha256_hex: header.sha256_hex.clone(),
    })
}

fn first_message_must_be_the_header() -> Status {
    ApplicationError::invalid("header", "the first message must carry the header").into()
}

/// Runs an upload: the header, a retry's answer or the checks before the content, the
/// content checked as it streams, then the document stored and recorded.
pub(super) async fn upload(
    workflow: &Workflow,
    request: Request<Streaming<pb::UploadDocumentRequest>>,
) -> Result<pb::UploadDocumentResponse, Status> {
    use pb::upload_document_request::Part;
    let authenticated = auth::Caller::of(&request)?.clone();
    let mut messages = request.into_inner();
    let Some(first) = messages.message().await? else {
        return Err(first_message_must_be_the_header());
    };
    let Some(Part::Header(wire_header)) = first.part else {
        return Err(first_message_must_be_the_header());
    };
    let mut v = Violations::new();
    let id = v.request_id(&wire_header.request_id);
    let parsed = header(&mut v, &wire_header);
    v.check(ApplicationError::Invalid)?;
    let (id, parsed) = (id.expect(VALIDATED), parsed.expect(VALIDATED));
    let caller = Caller {
        key: authenticated.idempotency_key(id.as_str()),
        fingerprint: fingerprint(op::UPLOAD_DOCUMENT, &wire_header),
        actor: authenticated.actor(),
        tenant: authenticated.tenant(),
        expert_id: authenticated.principal.expert_id.clone(),
        audit: Some(AuditRecord::change(&authenticated, &[], Some(id.as_str()))),
        request_id: id,
    };
    if let UploadStart::Replay(response) = workflow.start_upload(&parsed, &caller).await? {
        return Ok(response);
    }
    let declared_size = u64::try_from(parsed.size_bytes).expect("validated positive");
    let mut check = ContentCheck::new(declared_size, &parsed.sha256_hex);
    let refused = |problem| match problem {
        ContentProblem::SizeMismatch => Status::from(ApplicationError::DocumentSizeMismatch),
        ContentProblem::DigestMismatch => Status::from(ApplicationError::DocumentDigestMismatch),
    };
    while let Some(message) = messages.message().await? {
        match message.part {
            Some(Part::Chunk(chunk)) => check.push(&chunk).map_err(refused)?,
            Some(Part::Header(_)) | None => {
                return Err(ApplicationError::invalid(
                    "chunk",
                    "every message after the first must carry a chunk",
                )
                .into());
            }
        }
    }
    let content = check.finish().map_err(refused)?;
    Ok(workflow.finish_upload(parsed, content, &caller).await?)
}

/// What is left of a download: the content as it comes from the store, the part of its last
/// piece not yet sent, and the digest so far.
struct Download {
    content: BoxStream<'static, Result<Bytes, DocumentStoreError>>,
    pending: Bytes,
    hasher: Sha256,
    document_id: String,
    sha256_hex: String,
    finished: bool,
}

/// The messages of a download: the metadata, then the content in chunks of at most
/// [`DOWNLOAD_CHUNK_BYTES_MAX`]; a content whose SHA-256 is not the recorded one ends the
/// stream with `DATA_LOSS`.
pub(super) async fn download(
    workflow: &Workflow,
    document: DocumentView,
) -> Result<DownloadStream, Status> {
    use pb::download_document_response::Part;
    let content = workflow.document_content(&document.row).await?;
    let metadata = pb::DownloadDocumentResponse {
        part: Some(Part::Document(document.to_proto())),
    };
    let state = Download {
        content,
        pending: Bytes::new(),
        hasher: Sha256::new(),
        document_id: document.row.document_id.clone(),
        sha256_hex: document.row.sha256_hex.clone(),
        finished: false,
    };
    let chunks = futures::stream::unfold(state, |mut state| async move {
        if state.finished {
            return None;
        }
        loop {
            if !state.pending.is_empty() {
                let piece = state
                    .pending
                    .split_to(state.pending.len().min(DOWNLOAD_CHUNK_BYTES_MAX));
                let message = pb::DownloadDocumentResponse {
                    part: Some(Part::Chunk(piece.to_vec())),
                };
                return Some((Ok(message), state));
            }
            match state.content.next().await {
                Some(Ok(bytes)) => {
                    state.hasher.update(&bytes);
                    state.pending = bytes;
                }
                Some(Err(error)) => {
                    state.finished = true;
                    return Some((Err(Status::from(ApplicationError::from(error))), state));
                }
                None => {
                    state.finished = true;
                    let digest = hex::encode(state.hasher.finalize_reset());
                    if digest == state.sha256_hex {
                        return None;
                    }
                    let corrupted = ApplicationError::DocumentCorrupted {
                        document_id: state.document_id.clone(),
                    };
                    return Some((Err(Status::from(corrupted)), state));
                }
            }
        }
    });
    Ok(futures::stream::once(async { Ok(metadata) })
        .chain(chunks)
        .boxed())
}
