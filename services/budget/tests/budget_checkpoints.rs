//! Signed checkpoints of the ledger heads: refused without a key (naming the setting), made on
//! demand idempotently and never re-signed for an unmoved head, made by the schedule and
//! published until accepted, in Ed25519 and in SM2/SM3 (with a key made by OpenSSL, whose
//! signatures OpenSSL verifies). Runs on SQLite, and on PostgreSQL when
//! `SUBSIDY_TEST_DATABASE` names a server.

// Amounts are written yuan_fen (`600_00` is 600.00 CNY), which clippy reads as odd grouping.
#![allow(clippy::inconsistent_digit_grouping)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use subsidy_budget::domain::checkpoint::{
    Algorithm, Checkpoint, CheckpointSigner, Head, PublicKey,
};
use subsidy_budget::ops::checkpoint::Publisher;
use subsidy_budget::storage::checkpoints::StoredCheckpoint;
use subsidy_proto::budget as pb;
use subsidy_proto::status::{metadata, reason};
use support::*;
use tonic::Code;

fn signer(algorithm: Algorithm) -> CheckpointSigner {
    CheckpointSigner::from_seed(algorithm, &[42; 32]).unwrap()
}

/// The domain form of a checkpoint from the wire.
fn domain(checkpoint: &pb::LedgerCheckpoint) -> Checkpoint {
    Checkpoint {
        head: Head {
            pool_id: checkpoint.pool_id.clone(),
            sequence: checkpoint.sequence,
            head_hash: checkpoint.head_hash.clone(),
            total_fen: fen_of(&checkpoint.total),
            held_fen: fen_of(&checkpoint.held),
            committed_fen: fen_of(&checkpoint.committed),
            created_us: checkpoint
                .create_time
                .map(|t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1_000)
                .unwrap(),
        },
        algorithm: match checkpoint.algorithm() {
            pb::CheckpointAlgorithm::Ed25519 => Algorithm::Ed25519,
            pb::CheckpointAlgorithm::Sm2Sm3 => Algorithm::Sm2Sm3,
            pb::CheckpointAlgorithm::Unspecified => panic!("no algorithm"),
        },
        key_id: checkpoint.key_id.clone(),
        signature: checkpoint.signature.clone(),
    }
}

fn create(request_id: &str, pool_id: &str) -> pb::CreateCheckpointRequest {
    pb::CreateCheckpointRequest {
        request_id: request_id.into(),
        pool_id: pool_id.into(),
    }
}

fn hold(request_id: &str, pool_id: &str, amount_fen: i64) -> pb::ReserveRequest {
    pb::ReserveRequest {
        request_id: request_id.into(),
        pool_id: pool_id.into(),
        beneficiary_uscc: beneficiary(1).to_string(),
        amount: cny(amount_fen),
        reference: format!("app-{request_id}"),
        hold_seconds: 0,
    }
}

#[tokio::test]
async fn without_a_key_checkpoints_are_refused_naming_the_setting_and_money_still_moves() {
    // Proves the service runs without a checkpoint key: holds succeed, and CreateCheckpoint is
    // FAILED_PRECONDITION / CHECKPOINTS_DISABLED naming the setting and its variable.
    let db = fresh_db("checkpoint_disabled").await;
    let budget = store(&db.url, 0).await;
    create_pool(&budget, "plain", 1_000_00, None, None).await;
    let mut client = spawn(budget).await;
    client.reserve(hold("h1", "plain", 1_00)).await.unwrap();
    let status = client
        .create_checkpoint(create("c1", "plain"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status).as_deref(), Some("CHECKPOINTS_DISABLED"));
    let details = metadata(&status);
    assert_eq!(details["setting"], "budget.checkpoint_key_file");
    assert_eq!(details["env"], "SUBSIDY_BUDGET_CHECKPOINT_KEY_FILE");
}

#[tokio::test]
async fn create_checkpoint_is_idempotent_and_signs_a_head_only_once() {
    // Proves CreateCheckpoint replays its response by request id, refuses a reused id, signs
    // an unmoved head once (a second request answers `created` false with the same
    // checkpoint), signs again after the head moved, and that every checkpoint listed verifies
    // with the public key and matches the ledger entry at its sequence.
    let db = fresh_db("checkpoint_create").await;
    let key = signer(Algorithm::Ed25519);
    let public = key.public_key().clone();
    let budget = store(&db.url, 0).await.with_checkpoint_signer(key);
    create_pool(&budget, "signed", 1_000_00, None, None).await;
    let mut client = spawn(budget).await;
    let first = client
        .create_checkpoint(create("c1", "signed"))
        .await
        .unwrap()
        .into_inner();
    assert!(first.created);
    let replay = client
        .create_checkpoint(create("c1", "signed"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replay, first, "a replay returns the first response");
    let unmoved = client
        .create_checkpoint(create("c2", "signed"))
        .await
        .unwrap()
        .into_inner();
    assert!(!unmoved.created);
    assert_eq!(unmoved.checkpoint, first.checkpoint);
    let status = client
        .create_checkpoint(create("c1", "other-pool"))
        .await
        .unwrap_err();
    assert_eq!(reason(&status).as_deref(), Some("REQUEST_ID_REUSED"));
    let status = client
        .create_checkpoint(create("c3", "no-such-pool"))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::NotFound, Some("POOL_NOT_FOUND"))
    );
    let status = client
        .create_checkpoint(create("c4", "Bad Pool"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    client.reserve(hold("h1", "signed", 250_00)).await.unwrap();
    let moved = client
        .create_checkpoint(create("c5", "signed"))
        .await
        .unwrap()
        .into_inner();
    assert!(moved.created);
    let checkpoint = moved.checkpoint.unwrap();
    assert_eq!(checkpoint.sequence, 2);
    assert_eq!(fen_of(&checkpoint.held), 250_00);
    assert_eq!(fen_of(&checkpoint.total), 1_000_00);

    let listed = client
        .list_checkpoints(pb::ListCheckpointsRequest {
            pool_id: "signed".into(),
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.checkpoints.len(), 1);
    let rest = client
        .list_checkpoints(pb::ListCheckpointsRequest {
            pool_id: "signed".into(),
            page_size: 10,
            page_token: listed.next_page_token,
        })
        .await
        .unwrap()
        .into_inner();
    let all: Vec<_> = listed
        .checkpoints
        .into_iter()
        .chain(rest.checkpoints)
        .collect();
    assert_eq!(all.len(), 2, "one checkpoint per head signed");
    let entries = client
        .list_ledger_entries(pb::ListLedgerEntriesRequest {
            pool_id: "signed".into(),
            page_size: 10,
            page_token: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    for checkpoint in &all {
        assert_eq!(public.verify(&domain(checkpoint)), Ok(()));
        let entry = &entries[usize::try_from(checkpoint.sequence).unwrap() - 1];
        assert_eq!(entry.entry_hash, checkpoint.head_hash);
        assert_eq!(fen_of(&entry.held_after), fen_of(&checkpoint.held));
    }
}

/// A publisher that refuses its first `refusals` calls, then records what it gets.
#[derive(Default)]
struct Recorder {
    refusals: Mutex<usize>,
    published: Mutex<Vec<StoredCheckpoint>>,
}

impl Publisher for Recorder {
    fn publish<'a>(
        &'a self,
        checkpoint: &'a StoredCheckpoint,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let mut refusals = self.refusals.lock().unwrap();
            if *refusals > 0 {
                *refusals -= 1;
                return Err("UNAVAILABLE".into());
            }
            self.published.lock().unwrap().push(checkpoint.clone());
            Ok(())
        })
    }
}

#[tokio::test]
async fn the_schedule_signs_pools_whose_head_moved_and_publishes_until_accepted() {
    // Proves the scheduled work signs each pool whose head moved (and only those: an unmoved
    // head is not signed again over many intervals), and that a checkpoint the publisher
    // refused is published later, once.
    let db = fresh_db("checkpoint_schedule").await;
    let budget = store(&db.url, 0)
        .await
        .with_checkpoint_signer(signer(Algorithm::Ed25519));
    create_pool(&budget, "scheduled", 1_000_00, None, None).await;
    let recorder = Arc::new(Recorder {
        refusals: Mutex::new(1),
        ..Recorder::default()
    });
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let task = subsidy_budget::spawn_checkpoints(
        budget.clone(),
        Duration::from_millis(100),
        Some(recorder.clone()),
        stop_rx,
    );
    let listed = subsidy_testkit::eventually("the schedule to sign the pool", || {
        let budget = budget.clone();
        async move {
            let listed = budget.list_checkpoints("scheduled", 0, 10).await.unwrap();
            (!listed.is_empty()).then_some(listed)
        }
    })
    .await;
    assert_eq!(listed[0].checkpoint.head.sequence, 1);
    // The refused publication is retried (every PUBLISH_RETRY_MS) and then accepted.
    let published = subsidy_testkit::eventually("the checkpoint to be published", || {
        let recorder = recorder.clone();
        async move {
            let published = recorder.published.lock().unwrap().clone();
            (!published.is_empty()).then_some(published)
        }
    })
    .await;
    assert_eq!(published, listed[..1]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        budget
            .list_checkpoints("scheduled", 0, 10)
            .await
            .unwrap()
            .len(),
        1,
        "an unmoved head is not signed again"
    );
    let _ = stop.send(true);
    task.await.unwrap();
    assert_eq!(
        recorder.published.lock().unwrap().len(),
        1,
        "published once"
    );
}

#[tokio::test]
async fn an_sm2_key_made_by_openssl_signs_checkpoints_that_openssl_verifies() {
    // Proves the SM2/SM3 choice interoperates: a PKCS#8 key from `openssl genpkey -algorithm
    // SM2` is loaded as budget.checkpoint_key_file with budget.checkpoint_algorithm sm2-sm3,
    // the service's checkpoint verifies with the public key OpenSSL derives (and not with an
    // Ed25519 key), and OpenSSL verifies the signature over the documented signed bytes with
    // SM3 and the default distinguishing identifier.
    let dir = tempfile::tempdir().unwrap();
    let openssl = |args: &[&str]| {
        let output = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("openssl runs");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    openssl(&["genpkey", "-algorithm", "SM2", "-out", "sm2.pem"]);
    openssl(&["pkey", "-in", "sm2.pem", "-pubout", "-out", "sm2.pub.pem"]);
    let settings = subsidy_budget::settings::Settings {
        checkpoint_key_file: dir.path().join("sm2.pem").display().to_string(),
        checkpoint_algorithm: "sm2-sm3".into(),
        ..Default::default()
    };
    let key = subsidy_budget::checkpoint_key::load(&settings)
        .unwrap()
        .expect("a key is configured");
    let public =
        PublicKey::from_pem(&std::fs::read_to_string(dir.path().join("sm2.pub.pem")).unwrap())
            .unwrap();
    assert_eq!(public.algorithm(), Algorithm::Sm2Sm3);
    assert_eq!(public.key_id(), key.public_key().key_id());

    let db = fresh_db("checkpoint_sm2").await;
    let budget = store(&db.url, 0).await.with_checkpoint_signer(key);
    create_pool(&budget, "guomi", 1_000_00, None, None).await;
    let mut client = spawn(budget).await;
    let checkpoint = client
        .create_checkpoint(create("sm2", "guomi"))
        .await
        .unwrap()
        .into_inner()
        .checkpoint
        .unwrap();
    assert_eq!(checkpoint.algorithm(), pb::CheckpointAlgorithm::Sm2Sm3);
    let checkpoint = domain(&checkpoint);
    assert_eq!(public.verify(&checkpoint), Ok(()));
    let ed25519 = signer(Algorithm::Ed25519);
    assert!(ed25519.public_key().verify(&checkpoint).is_err());

    std::fs::write(dir.path().join("signed.bin"), checkpoint.signed_bytes()).unwrap();
    let der = sm2::dsa::Signature::from_slice(&checkpoint.signature)
        .unwrap()
        .to_der();
    std::fs::write(dir.path().join("signature.der"), der.as_bytes()).unwrap();
    let said = openssl(&[
        "pkeyutl",
        "-verify",
        "-in",
        "signed.bin",
        "-sigfile",
        "signature.der",
        "-pubin",
        "-inkey",
        "sm2.pub.pem",
        "-rawin",
        "-digest",
        "sm3",
        "-pkeyopt",
        "distid:1234567812345678",
    ]);
    assert!(said.contains("Verified Successfully"), "{said}");
}
