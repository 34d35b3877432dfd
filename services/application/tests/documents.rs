//! Documents of claims through the application service with fake peers: the upload checked
//! against its declared digest and size while it streams, the content-addressed store that is
//! never overwritten, the limits, idempotency, who may download, and the same round trip
//! against a real S3-compatible server (moto, started by the test).

mod support;

use std::time::Duration;

use sha2::{Digest, Sha256};
use subsidy_common::config::ServiceKind;
use subsidy_proto::access::Role;
use subsidy_proto::application as pb;
use subsidy_proto::status::reason;
use subsidy_testkit::auth::{Credentials, Transport, token};
use support::*;
use tonic::Code;

fn sha(content: &[u8]) -> String {
    hex::encode(Sha256::digest(content))
}

/// Content of `size` bytes, varied enough that chunking mistakes show.
fn content(size: usize, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn header(
    request_id: &str,
    application_id: &str,
    content: &[u8],
    sha256_hex: &str,
) -> pb::UploadDocumentHeader {
    pb::UploadDocumentHeader {
        request_id: request_id.into(),
        application_id: application_id.into(),
        kind: pb::DocumentKind::Contract as i32,
        file_name: "contract.pdf".into(),
        media_type: "application/pdf".into(),
        size_bytes: content.len() as i64,
        sha256_hex: sha256_hex.into(),
    }
}

/// Uploads `content` in chunks of 10,000 bytes after `header`.
async fn upload(
    app: &mut App,
    header: pb::UploadDocumentHeader,
    content: &[u8],
) -> Result<pb::Document, tonic::Status> {
    use pb::upload_document_request::Part;
    let mut messages = vec![pb::UploadDocumentRequest {
        part: Some(Part::Header(header)),
    }];
    messages.extend(
        content
            .chunks(10_000)
            .map(|chunk| pb::UploadDocumentRequest {
                part: Some(Part::Chunk(chunk.to_vec())),
            }),
    );
    Ok(app
        .upload_document(futures::stream::iter(messages))
        .await?
        .into_inner()
        .document
        .expect("a document"))
}

/// Downloads a document: its metadata and its content.
async fn download(
    app: &mut App,
    document_id: &str,
) -> Result<(pb::Document, Vec<u8>), tonic::Status> {
    use pb::download_document_response::Part;
    let mut stream = app
        .download_document(pb::DownloadDocumentRequest {
            document_id: document_id.into(),
        })
        .await?
        .into_inner();
    let first = stream.message().await?.expect("the metadata first");
    let Some(Part::Document(document)) = first.part else {
        panic!("the first message carries the metadata");
    };
    let mut content = Vec::new();
    while let Some(message) = stream.message().await? {
        let Some(Part::Chunk(chunk)) = message.part else {
            panic!("every later message carries a chunk");
        };
        assert!(chunk.len() <= 64 * 1024, "chunks of at most 64 KiB");
        content.extend_from_slice(&chunk);
    }
    Ok((document, content))
}

/// A client acting with `token`.
async fn client_as(stack: &Stack, token: String) -> App {
    App::new(
        stack
            .channel_as(
                ServiceKind::Application,
                Transport::Anonymous,
                Credentials::Token(token.into()),
            )
            .await,
    )
}

/// A claim of enterprise `n` whose contract declares `declared` as its attachment.
async fn claim_with(app: &mut App, n: usize, declared: &[u8]) -> pb::Claim {
    let buyer = shandong(n);
    register(app, &buyer).await;
    let mut contract = contract(&format!("DOC-{n}"), &seller(1), 10_000_000);
    contract.attachments = vec![pb::AttachmentDigest {
        file_name: "contract.pdf".into(),
        sha256_hex: sha(declared),
        size_bytes: declared.len() as i64,
    }];
    submitted(app, &format!("doc-claim-{n}"), &buyer, contract).await
}

/// The files under a directory, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[tokio::test]
async fn an_uploaded_document_downloads_byte_for_byte_and_links_to_the_declared_attachment() {
    // Proves the round trip: a 300,000-byte contract uploaded in chunks comes back identical
    // (in chunks of at most 64 KiB), is stored under its SHA-256, listed with its claim, and
    // linked to the contract's declared attachment digest in GetClaim; a reviewer and an
    // auditor download it too.
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().display().to_string();
    let (stack, _peers) = with_pool(
        POOL_2025_FEN,
        LONG_HOLD_SECONDS,
        &[("SUBSIDY_APPLICATION_DOCUMENTS_URL", &url)],
    )
    .await;
    let mut app = stack.app().await;
    let bytes = content(300_000, 7);
    let claim = claim_with(&mut app, 401, &bytes).await;
    let document = upload(
        &mut app,
        header("up-1", &claim.claim_id, &bytes, &sha(&bytes)),
        &bytes,
    )
    .await
    .unwrap();
    assert!(document.document_id.starts_with("document-"));
    assert_eq!(document.size_bytes, 300_000);
    assert_eq!(document.sha256_hex, sha(&bytes));
    assert!(document.attachment_declared);

    let stored = dir
        .path()
        .join("sha256")
        .join(&sha(&bytes)[..2])
        .join(sha(&bytes));
    assert_eq!(
        std::fs::read(&stored).unwrap(),
        bytes,
        "stored under its SHA-256"
    );

    let (metadata, downloaded) = download(&mut app, &document.document_id).await.unwrap();
    assert_eq!(metadata, document);
    assert_eq!(downloaded, bytes);
    for role in [Role::Reviewer, Role::Auditor] {
        let mut staff = client_as(&stack, token("doc-staff", &[role], &[], None)).await;
        let (_, downloaded) = download(&mut staff, &document.document_id).await.unwrap();
        assert_eq!(downloaded, bytes, "{role:?} downloads it");
    }

    let listed = app
        .list_documents(pb::ListDocumentsRequest {
            application_id: claim.claim_id.clone(),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.documents, vec![document.clone()]);
    let claim = app
        .get_claim(pb::GetClaimRequest {
            claim_id: claim.claim_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .claim
        .unwrap();
    assert_eq!(
        claim.attachment_documents,
        vec![pb::AttachmentDocument {
            sha256_hex: sha(&bytes),
            document_id: document.document_id.clone(),
        }]
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn content_that_does_not_match_its_declaration_stores_nothing() {
    // Proves an altered byte (DOCUMENT_DIGEST_MISMATCH), a short or long content
    // (DOCUMENT_SIZE_MISMATCH) and a header out of place are refused as INVALID_ARGUMENT, with
    // no object, no row and no stored response; the same request id then uploads the right
    // content.
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().display().to_string();
    let (stack, _peers) = with_pool(
        POOL_2025_FEN,
        LONG_HOLD_SECONDS,
        &[("SUBSIDY_APPLICATION_DOCUMENTS_URL", &url)],
    )
    .await;
    let mut app = stack.app().await;
    let bytes = content(50_000, 3);
    let claim = claim_with(&mut app, 402, &bytes).await;
    let db = stack.database(ServiceKind::Application).await;
    let keys_before = count(&db, "idempotency_keys").await;

    let mut altered = bytes.clone();
    altered[25_000] ^= 1;
    let refused = upload(
        &mut app,
        header("up-bad", &claim.claim_id, &bytes, &sha(&bytes)),
        &altered,
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(
        reason(&refused).as_deref(),
        Some("DOCUMENT_DIGEST_MISMATCH")
    );

    for wrong in [&bytes[..49_999], &[bytes.as_slice(), b"x"].concat()[..]] {
        let refused = upload(
            &mut app,
            header("up-bad", &claim.claim_id, &bytes, &sha(&bytes)),
            wrong,
        )
        .await
        .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert_eq!(reason(&refused).as_deref(), Some("DOCUMENT_SIZE_MISMATCH"));
    }
    let chunk_first = app
        .upload_document(futures::stream::iter(vec![pb::UploadDocumentRequest {
            part: Some(pb::upload_document_request::Part::Chunk(bytes.clone())),
        }]))
        .await
        .unwrap_err();
    assert_eq!(chunk_first.code(), Code::InvalidArgument);

    assert!(files_under(dir.path()).is_empty(), "no object stored");
    assert_eq!(count(&db, "documents").await, 0, "no row");
    assert_eq!(
        count(&db, "idempotency_keys").await,
        keys_before,
        "no response"
    );

    let document = upload(
        &mut app,
        header("up-bad", &claim.claim_id, &bytes, &sha(&bytes)),
        &bytes,
    )
    .await
    .unwrap();
    assert_eq!(document.size_bytes, 50_000);
    assert_eq!(files_under(dir.path()).len(), 1);
    stack.shutdown().await;
}

#[tokio::test]
async fn documents_above_the_limits_are_refused_before_their_content() {
    // Proves the per-document limit (DOCUMENT_TOO_LARGE) and the per-application total
    // (APPLICATION_DOCUMENTS_TOO_LARGE) are RESOURCE_EXHAUSTED and store nothing, while a
    // document within both is accepted.
    let (stack, _peers) = with_pool(
        POOL_2025_FEN,
        LONG_HOLD_SECONDS,
        &[
            ("SUBSIDY_APPLICATION_DOCUMENT_SIZE_BYTES_MAX", "100000"),
            (
                "SUBSIDY_APPLICATION_APPLICATION_DOCUMENTS_BYTES_MAX",
                "150000",
            ),
        ],
    )
    .await;
    let mut app = stack.app().await;
    let big = content(100_001, 1);
    let claim = claim_with(&mut app, 403, &big).await;
    let refused = upload(
        &mut app,
        header("too-big", &claim.claim_id, &big, &sha(&big)),
        &big,
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(reason(&refused).as_deref(), Some("DOCUMENT_TOO_LARGE"));

    let first = content(100_000, 2);
    upload(
        &mut app,
        header("first", &claim.claim_id, &first, &sha(&first)),
        &first,
    )
    .await
    .unwrap();
    let second = content(60_000, 3);
    let refused = upload(
        &mut app,
        header("second", &claim.claim_id, &second, &sha(&second)),
        &second,
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(
        reason(&refused).as_deref(),
        Some("APPLICATION_DOCUMENTS_TOO_LARGE")
    );
    let db = stack.database(ServiceKind::Application).await;
    assert_eq!(count(&db, "documents").await, 1);
    stack.shutdown().await;
}

#[tokio::test]
async fn another_applicant_neither_downloads_nor_lists_nor_uploads() {
    // Proves the tenant rule: an applicant of another enterprise gets DOCUMENT_NOT_FOUND for
    // the document, CLAIM_NOT_FOUND for the claim's list and for an upload to it, as if
    // neither existed; finance, not admitted to documents, is PERMISSION_DENIED.
    let (stack, _peers) = with_pool(POOL_2025_FEN, LONG_HOLD_SECONDS, &[]).await;
    let mut app = stack.app().await;
    let bytes = content(2_000, 9);
    let claim = claim_with(&mut app, 404, &bytes).await;
    let document = upload(
        &mut app,
        header("mine", &claim.claim_id, &bytes, &sha(&bytes)),
        &bytes,
    )
    .await
    .unwrap();
    let other = shandong(405);
    register(&mut app, &other).await;
    let mut stranger = client_as(
        &stack,
        token(
            "other-applicant",
            &[Role::Applicant],
            &[other.to_string()],
            None,
        ),
    )
    .await;
    let refused = download(&mut stranger, &document.document_id)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
    assert_eq!(reason(&refused).as_deref(), Some("DOCUMENT_NOT_FOUND"));
    let refused = stranger
        .list_documents(pb::ListDocumentsRequest {
            application_id: claim.claim_id.clone(),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&refused).as_deref(), Some("CLAIM_NOT_FOUND"));
    let refused = upload(
        &mut stranger,
        header("theirs", &claim.claim_id, &bytes, &sha(&bytes)),
        &bytes,
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&refused).as_deref(), Some("CLAIM_NOT_FOUND"));
    let mut finance = client_as(&stack, token("doc-finance", &[Role::Finance], &[], None)).await;
    let refused = download(&mut finance, &document.document_id)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    stack.shutdown().await;
}

#[tokio::test]
async fn a_retried_upload_answers_the_same_document_and_equal_bytes_reuse_one_object() {
    // Proves idempotency by request id (the retry answers the same document, records no second
    // row; the id with another header is REQUEST_ID_REUSED), and that the same bytes uploaded
    // again under a new request id make a second document over the one object, which is never
    // rewritten (its modification time stays).
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().display().to_string();
    let (stack, _peers) = with_pool(
        POOL_2025_FEN,
        LONG_HOLD_SECONDS,
        &[("SUBSIDY_APPLICATION_DOCUMENTS_URL", &url)],
    )
    .await;
    let mut app = stack.app().await;
    let bytes = content(20_000, 5);
    let claim = claim_with(&mut app, 406, &bytes).await;
    let first = upload(
        &mut app,
        header("once", &claim.claim_id, &bytes, &sha(&bytes)),
        &bytes,
    )
    .await
    .unwrap();
    let objects = files_under(dir.path());
    assert_eq!(objects.len(), 1);
    let written = std::fs::metadata(&objects[0]).unwrap().modified().unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;

    let retried = upload(
        &mut app,
        header("once", &claim.claim_id, &bytes, &sha(&bytes)),
        &bytes,
    )
    .await
    .unwrap();
    assert_eq!(retried, first);
    let db = stack.database(ServiceKind::Application).await;
    assert_eq!(count(&db, "documents").await, 1);

    let mut other_header = header("once", &claim.claim_id, &bytes, &sha(&bytes));
    other_header.file_name = "renamed.pdf".into();
    let refused = upload(&mut app, other_header, &bytes).await.unwrap_err();
    assert_eq!(reason(&refused).as_deref(), Some("REQUEST_ID_REUSED"));

    let again = upload(
        &mut app,
        header("twice", &claim.claim_id, &bytes, &sha(&bytes)),
        &bytes,
    )
    .await
    .unwrap();
    assert_ne!(again.document_id, first.document_id);
    assert_eq!(count(&db, "documents").await, 2);
    assert_eq!(
        files_under(dir.path()),
        objects,
        "one object for equal bytes"
    );
    assert_eq!(
        std::fs::metadata(&objects[0]).unwrap().modified().unwrap(),
        written,
        "the object was not rewritten"
    );
    let (_, downloaded) = download(&mut app, &again.document_id).await.unwrap();
    assert_eq!(downloaded, bytes);
    stack.shutdown().await;
}

/// A moto S3 server on a free loopback port, stopped when dropped.
struct Moto {
    endpoint: String,
    _child: tokio::process::Child,
}

impl Moto {
    /// Starts `moto_server` and waits (at most 30 s) until it answers.
    async fn start() -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("moto_server is installed (scripts/test installs moto[server])");
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "moto_server did not start within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Moto {
            endpoint,
            _child: child,
        }
    }

    /// Creates a bucket (moto does not check signatures).
    async fn create_bucket(&self, bucket: &str) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let host = self.endpoint.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
        let request = format!(
            "PUT /{bucket} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "bucket created: {answer}"
        );
    }
}

#[tokio::test]
async fn documents_round_trip_through_an_s3_compatible_store() {
    // Proves the S3 store against a real S3-compatible server (moto): an upload is stored under
    // the configured prefix, downloads byte for byte, equal bytes reuse the object, and a
    // refused content stores nothing.
    let moto = Moto::start().await;
    moto.create_bucket("subsidy-documents").await;
    let (stack, _peers) = with_pool(
        POOL_2025_FEN,
        LONG_HOLD_SECONDS,
        &[
            (
                "SUBSIDY_APPLICATION_DOCUMENTS_URL",
                "s3://subsidy-documents/test",
            ),
            ("SUBSIDY_APPLICATION_DOCUMENTS_S3_ENDPOINT", &moto.endpoint),
            ("SUBSIDY_APPLICATION_DOCUMENTS_S3_REGION", "us-east-1"),
            ("SUBSIDY_APPLICATION_DOCUMENTS_S3_ACCESS_KEY_ID", "testing"),
            (
                "SUBSIDY_APPLICATION_DOCUMENTS_S3_SECRET_ACCESS_KEY",
                "testing",
            ),
            ("SUBSIDY_APPLICATION_DOCUMENTS_S3_ALLOW_HTTP", "true"),
        ],
    )
    .await;
    let mut app = stack.app().await;
    let bytes = content(150_000, 11);
    let claim = claim_with(&mut app, 407, &bytes).await;
    let mut altered = bytes.clone();
    altered[0] ^= 0xff;
    let refused = upload(
        &mut app,
        header("s3-bad", &claim.claim_id, &bytes, &sha(&bytes)),
        &altered,
    )
    .await
    .unwrap_err();
    assert_eq!(
        reason(&refused).as_deref(),
        Some("DOCUMENT_DIGEST_MISMATCH")
    );
    let document = upload(
        &mut app,
        header("s3-1", &claim.claim_id, &bytes, &sha(&bytes)),
        &bytes,
    )
    .await
    .unwrap();
    let (_, downloaded) = download(&mut app, &document.document_id).await.unwrap();
    assert_eq!(downloaded, bytes);
    let again = upload(
        &mut app,
        header("s3-2", &claim.claim_id, &bytes, &sha(&bytes)),
        &bytes,
    )
    .await
    .unwrap();
    let (_, downloaded) = download(&mut app, &again.document_id).await.unwrap();
    assert_eq!(downloaded, bytes);

    // The object is where the key says, read straight from the server.
    let key = format!("test/sha256/{}/{}", &sha(&bytes)[..2], sha(&bytes));
    let listing = list_bucket(&moto.endpoint, "subsidy-documents").await;
    assert_eq!(listing.matches("<Key>").count(), 1, "one object: {listing}");
    assert!(listing.contains(&key), "{listing}");
    stack.shutdown().await;

    // The write is create-only on S3 too: a second write to a key keeps the first content.
    use futures::TryStreamExt;
    use subsidy_application::documents::{DocumentStore, Stored};
    let settings = subsidy_application::settings::Settings {
        documents_url: "s3://subsidy-documents/create-only".into(),
        documents_s3_endpoint: moto.endpoint.clone(),
        documents_s3_region: "us-east-1".into(),
        documents_s3_access_key_id: "testing".into(),
        documents_s3_secret_access_key: "testing".into(),
        documents_s3_allow_http: true,
        ..Default::default()
    };
    let store = DocumentStore::open(&settings).unwrap();
    let first = bytes::Bytes::from_static(b"first");
    assert_eq!(
        store.put_new("k", first.clone()).await.unwrap(),
        Stored::Created
    );
    assert_eq!(
        store
            .put_new("k", bytes::Bytes::from_static(b"second"))
            .await
            .unwrap(),
        Stored::Existing
    );
    let kept: Vec<bytes::Bytes> = store.get("k").await.unwrap().try_collect().await.unwrap();
    assert_eq!(kept.concat(), b"first");
}

/// The bucket's listing (ListObjectsV2 XML), asked of the server directly.
async fn list_bucket(endpoint: &str, bucket: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = endpoint.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let request =
        format!("GET /{bucket}?list-type=2 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test]
async fn an_altered_stored_object_ends_the_download_with_data_loss() {
    // Proves the download checks the stored content against the recorded SHA-256: an object
    // altered behind the service's back ends the stream with DATA_LOSS/DOCUMENT_CORRUPTED, and
    // a missing one is refused the same way before any content.
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().display().to_string();
    let (stack, _peers) = with_pool(
        POOL_2025_FEN,
        LONG_HOLD_SECONDS,
        &[("SUBSIDY_APPLICATION_DOCUMENTS_URL", &url)],
    )
    .await;
    let mut app = stack.app().await;
    let bytes = content(70_000, 13);
    let claim = claim_with(&mut app, 408, &bytes).await;
    let document = upload(
        &mut app,
        header("to-alter", &claim.claim_id, &bytes, &sha(&bytes)),
        &bytes,
    )
    .await
    .unwrap();
    let objects = files_under(dir.path());
    let mut altered = bytes.clone();
    altered[69_999] ^= 1;
    std::fs::write(&objects[0], &altered).unwrap();
    let refused = download(&mut app, &document.document_id).await.unwrap_err();
    assert_eq!(refused.code(), Code::DataLoss);
    assert_eq!(reason(&refused).as_deref(), Some("DOCUMENT_CORRUPTED"));
    std::fs::remove_file(&objects[0]).unwrap();
    let refused = download(&mut app, &document.document_id).await.unwrap_err();
    assert_eq!(refused.code(), Code::DataLoss);
    assert_eq!(reason(&refused).as_deref(), Some("DOCUMENT_CORRUPTED"));
    stack.shutdown().await;
}

#[tokio::test]
async fn a_proposal_file_links_to_the_digest_its_proposal_declared() {
    // Proves documents of proposals: a file whose SHA-256 the proposal declared is linked in
    // GetProposal (attachment_documents) and marked attachment_declared; another file is not.
    use subsidy_testkit::rounds::open_round;
    let (stack, _peers) = spawn(quick_application(&[])).await;
    let (mut app, round) = open_round(&stack, 4_000_000_000).await;
    let who = shandong(409);
    register(&mut app, &who).await;
    let declared = content(30_000, 17);
    let proposal = app
        .submit_proposal(pb::SubmitProposalRequest {
            request_id: "doc-proposal".into(),
            round_id: round.round_id.clone(),
            applicant_uscc: who.to_string(),
            category: pb::ProposalCategory::TrustedDataSpace as i32,
            title: "Documents".into(),
            requested_amount: cny(300_000_000),
            summary: "A trusted data space.".into(),
            attachments: vec![pb::AttachmentDigest {
                file_name: "proposal.pdf".into(),
                sha256_hex: sha(&declared),
                size_bytes: declared.len() as i64,
            }],
        })
        .await
        .unwrap()
        .into_inner()
        .proposal
        .unwrap();
    let mut proposal_header = header("p-1", &proposal.proposal_id, &declared, &sha(&declared));
    proposal_header.kind = pb::DocumentKind::Proposal as i32;
    let linked = upload(&mut app, proposal_header, &declared).await.unwrap();
    assert!(linked.attachment_declared);
    let other = content(1_000, 19);
    let unlinked = upload(
        &mut app,
        header("p-2", &proposal.proposal_id, &other, &sha(&other)),
        &other,
    )
    .await
    .unwrap();
    assert!(!unlinked.attachment_declared);
    let proposal = app
        .get_proposal(pb::GetProposalRequest {
            proposal_id: proposal.proposal_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .proposal
        .unwrap();
    assert_eq!(
        proposal.attachment_documents,
        vec![pb::AttachmentDocument {
            sha256_hex: sha(&declared),
            document_id: linked.document_id,
        }]
    );
    stack.shutdown().await;
}
