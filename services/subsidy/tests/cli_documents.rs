//! `subsidyctl document upload|download|list` against a fresh `subsidy dev`: a file uploaded
//! for the example claim comes back byte for byte, lands in the dev stack's data directory under
//! its SHA-256, uploads again as the same document, and is listed with its claim.

mod support;

use serde_json::Value;
use sha2::{Digest, Sha256};
use support::{Dev, args, repo_root, succeeded};

#[test]
fn a_document_uploads_lists_and_downloads_byte_for_byte() {
    // Proves the three commands end to end: the upload answers the document (its size and
    // SHA-256), running it again answers the same document (derived request id), the list
    // holds it once, the download writes the same bytes and refuses to overwrite a file, and
    // the dev stack keeps the object in <data>/documents/sha256/ab/<sha256>.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut dev = Dev::start(&data);
    dev.wait_serving();
    let claim_id = dev.submit_example_claim();
    let file = repo_root().join("docs/examples/providers.csv");
    let bytes = std::fs::read(&file).unwrap();
    let sha = hex::encode(Sha256::digest(&bytes));
    let upload = || -> Value {
        serde_json::from_str(&succeeded(&dev.run(&args(&[
            "-o",
            "json",
            "document",
            "upload",
            file.to_str().unwrap(),
            "--application",
            &claim_id,
            "--kind",
            "other",
        ]))))
        .unwrap()
    };
    let document = upload();
    assert_eq!(document["sha256Hex"], sha.as_str(), "{document}");
    assert_eq!(document["fileName"], "providers.csv", "{document}");
    assert_eq!(document["mediaType"], "text/csv", "{document}");
    assert_eq!(document["kind"], "DOCUMENT_KIND_OTHER", "{document}");
    assert_eq!(
        upload(),
        document,
        "the same upload answers the same document"
    );
    let id = document["documentId"].as_str().unwrap().to_owned();

    let listed: Value = serde_json::from_str(&succeeded(&dev.run(&args(&[
        "-o",
        "json",
        "document",
        "list",
        "--application",
        &claim_id,
    ]))))
    .unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");

    let out = dir.path().join("downloaded.csv");
    succeeded(&dev.run(&args(&[
        "document",
        "download",
        &id,
        "--out",
        out.to_str().unwrap(),
    ])));
    assert_eq!(std::fs::read(&out).unwrap(), bytes);
    let again = dev.run(&args(&[
        "document",
        "download",
        &id,
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(
        !again.status.success(),
        "an existing file is not overwritten"
    );

    let object = data
        .join("documents")
        .join("sha256")
        .join(&sha[..2])
        .join(&sha);
    assert_eq!(std::fs::read(object).unwrap(), bytes);
}
