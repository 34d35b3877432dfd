//! `subsidyctl document upload|download|list`: the documents of a claim or proposal. An upload
//! sends the file's size and SHA-256 first, then its content in chunks of 64 KiB; its request id
//! is derived from the application, the kind, the file name and the content's SHA-256, so the
//! same upload run twice answers the same document.

use std::path::PathBuf;

use clap::Subcommand;
use sha2::{Digest, Sha256};
use subsidy_common::BoxError;
use subsidy_proto::application as pb;

use super::{Client, PAGE_SIZE_MAX, derived_request_id, state_name};
use crate::ctl::{Binding, Ctx, enums, json, print, print_record, time};

/// Bytes per upload message.
const UPLOAD_CHUNK_BYTES: usize = 64 * 1024;

/// Document commands.
#[derive(Subcommand, Debug)]
pub enum DocumentCommand {
    /// Upload a file as a document of a claim or proposal.
    Upload {
        /// The file.
        file: PathBuf,
        /// The claim (`claim-…`) or proposal (`proposal-…`).
        #[arg(long)]
        application: String,
        /// CONTRACT, INVOICE, PAYMENT_PROOF, PROPOSAL or OTHER.
        #[arg(long, value_parser = enums::parser::<pb::DocumentKind>())]
        kind: pb::DocumentKind,
        /// The media type; guessed from the file's extension when not given.
        #[arg(long)]
        media_type: Option<String>,
        /// The request id (derived from the upload when not given).
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Download a document into a file (its SHA-256 checked as it arrives).
    Download {
        /// The document (`document-…`).
        id: String,
        /// Where to write it (refused if it exists).
        #[arg(long)]
        out: PathBuf,
    },
    /// List the documents of a claim or proposal, oldest upload first.
    List {
        /// The claim or proposal.
        #[arg(long)]
        application: String,
    },
}

/// The media type of a file by its extension.
fn media_type_of(file: &std::path::Path) -> &'static str {
    match file
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("pdf") => "application/pdf",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("yaml" | "yml") => "application/yaml",
        Some("txt") => "text/plain",
        Some("csv") => "text/csv",
        Some("xlsx") => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        _ => "application/octet-stream",
    }
}

/// A development token's binding to the enterprise of an application.
async fn binding(ctx: &Ctx, client: &mut Client, application: &str) -> Result<Binding, BoxError> {
    let enterprise = if application.starts_with("proposal-") {
        client
            .get_proposal(ctx.request(pb::GetProposalRequest {
                proposal_id: application.to_owned(),
            }))
            .await?
            .into_inner()
            .proposal
            .map(|proposal| proposal.applicant_uscc)
            .unwrap_or_default()
    } else {
        client
            .get_claim(ctx.request(pb::GetClaimRequest {
                claim_id: application.to_owned(),
            }))
            .await?
            .into_inner()
            .claim
            .map(|claim| claim.enterprise_uscc)
            .unwrap_or_default()
    };
    Ok(Binding {
        enterprises: vec![enterprise],
        expert: None,
    })
}

fn document_record(document: &pb::Document) -> Vec<(&'static str, String)> {
    vec![
        ("DOCUMENT", document.document_id.clone()),
        ("APPLICATION", document.application_id.clone()),
        (
            "KIND",
            state_name(document.kind().as_str_name(), "DOCUMENT_KIND_"),
        ),
        ("FILE", document.file_name.clone()),
        ("MEDIA TYPE", document.media_type.clone()),
        ("SIZE", document.size_bytes.to_string()),
        ("SHA-256", document.sha256_hex.clone()),
        (
            "DECLARED ATTACHMENT",
            if document.attachment_declared {
                "yes"
            } else {
                "no"
            }
            .to_owned(),
        ),
        ("UPLOADED BY", document.uploaded_by.clone()),
        ("UPLOADED AT", time(&document.upload_time)),
    ]
}

/// Runs a document command.
pub(super) async fn document(
    command: DocumentCommand,
    ctx: &Ctx,
    client: &mut Client,
) -> Result<(), BoxError> {
    match command {
        DocumentCommand::Upload {
            file,
            application,
            kind,
            media_type,
            request_id,
        } => {
            let content = std::fs::read(&file)
                .map_err(|error| format!("cannot read {}: {error}", file.display()))?;
            let sha256_hex = hex::encode(Sha256::digest(&content));
            let file_name = file
                .file_name()
                .and_then(|name| name.to_str())
                .ok_or("the file has no UTF-8 name")?
                .to_owned();
            let request_id = derived_request_id(
                request_id,
                &[
                    "document upload",
                    &application,
                    kind.as_str_name(),
                    &file_name,
                    &sha256_hex,
                ],
            );
            let header = pb::UploadDocumentHeader {
                request_id,
                application_id: application.clone(),
                kind: kind as i32,
                file_name,
                media_type: media_type.unwrap_or_else(|| media_type_of(&file).to_owned()),
                size_bytes: i64::try_from(content.len())?,
                sha256_hex,
            };
            use pb::upload_document_request::Part;
            let mut messages = vec![pb::UploadDocumentRequest {
                part: Some(Part::Header(header)),
            }];
            messages.extend(content.chunks(UPLOAD_CHUNK_BYTES).map(|chunk| {
                pb::UploadDocumentRequest {
                    part: Some(Part::Chunk(chunk.to_vec())),
                }
            }));
            let binding = binding(ctx, client, &application).await?;
            let document = client
                .upload_document(ctx.request_as(futures::stream::iter(messages), &binding))
                .await?
                .into_inner()
                .document
                .ok_or("the service answered without a document")?;
            print_record(ctx, &document_record(&document), || {
                json::message(&document)
            });
            Ok(())
        }
        DocumentCommand::Download { id, out } => {
            use pb::download_document_response::Part;
            // The owner is not known before the metadata; a development token's reviewer
            // role reads every document (an applicant's own token reads its own).
            let mut stream = client
                .download_document(ctx.request(pb::DownloadDocumentRequest {
                    document_id: id.clone(),
                }))
                .await?
                .into_inner();
            let first = stream.message().await?.ok_or("the service sent nothing")?;
            let Some(Part::Document(document)) = first.part else {
                return Err("the service did not send the document's metadata first".into());
            };
            let mut content = Vec::new();
            let mut hasher = Sha256::new();
            while let Some(message) = stream.message().await? {
                if let Some(Part::Chunk(chunk)) = message.part {
                    hasher.update(&chunk);
                    content.extend_from_slice(&chunk);
                }
            }
            if hex::encode(hasher.finalize()) != document.sha256_hex {
                return Err("the downloaded content does not have the document's SHA-256".into());
            }
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&out)
                .map_err(|error| format!("cannot create {}: {error}", out.display()))?;
            file.write_all(&content)?;
            print_record(ctx, &document_record(&document), || {
                json::message(&document)
            });
            Ok(())
        }
        DocumentCommand::List { application } => {
            let binding = binding(ctx, client, &application).await?;
            let mut documents = Vec::new();
            let mut token = String::new();
            loop {
                let page = client
                    .list_documents(ctx.request_as(
                        pb::ListDocumentsRequest {
                            application_id: application.clone(),
                            page_size: PAGE_SIZE_MAX,
                            page_token: token,
                        },
                        &binding,
                    ))
                    .await?
                    .into_inner();
                documents.extend(page.documents);
                token = page.next_page_token;
                if token.is_empty() {
                    break;
                }
            }
            let rows: Vec<Vec<String>> = documents
                .iter()
                .map(|d| {
                    vec![
                        d.document_id.clone(),
                        state_name(d.kind().as_str_name(), "DOCUMENT_KIND_"),
                        d.file_name.clone(),
                        d.size_bytes.to_string(),
                        d.sha256_hex[..16].to_owned(),
                        if d.attachment_declared { "yes" } else { "" }.to_owned(),
                        time(&d.upload_time),
                    ]
                })
                .collect();
            print(
                ctx,
                &[
                    "DOCUMENT", "KIND", "FILE", "SIZE", "SHA-256", "DECLARED", "UPLOADED",
                ],
                &rows,
                || json::messages(&documents),
            );
            Ok(())
        }
    }
}
