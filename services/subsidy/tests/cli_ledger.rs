//! Signed ledger checkpoints as an auditor uses them, against a fresh `subsidy dev`: a claim
//! moves money, `subsidyctl ledger checkpoint` signs the voucher pool's head before and after its
//! approval, `ledger export` writes the entries with both checkpoints, and `ledger verify --file
//! --public-key` (no service, no database) passes on the export as written. Then every way of
//! lying about the ledger that docs/LEDGER.md says is caught is tried on the file, and each is
//! named (line or file, pool, sequence, what) with exit code 1: an amount changed, an entry
//! deleted, entries reordered, the chain rewritten consistently without the key, checkpoints
//! swapped (another pool's, an older signature on a newer head, an older one after a newer
//! one), a wrong public key, and the tail of the chain lost together with the checkpoint that
//! signed it, caught by a checkpoint held elsewhere. The same path with an SM2 key made by
//! OpenSSL and `sm2-sm3` checkpoints (the Chinese commercial cryptography choice).

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;
use subsidy::ctl::ledger_file::parse_line;
use subsidy_budget::checkpoint_key::DEV_PUBLIC_KEY_FILE;
use subsidy_budget::domain::checkpoint::{Algorithm, CheckpointSigner};
use subsidy_budget::domain::ledger::GENESIS_HASH;
use subsidy_common::Money;
use support::{Dev, args, succeeded};

/// The seeded pool the example claim is funded from.
const VOUCHER_POOL: &str = "compute-voucher-2025";
/// Another seeded pool, whose checkpoint is swapped in.
const DATA_POOL: &str = "data-infra-2025";
/// What the consistent rewrite moves from committed back to the pool: 15,000.00.
const DIVERTED_FEN: i64 = 1_500_000;

fn json(output: &Output) -> Value {
    let text = succeeded(output);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// `subsidyctl -o json ledger verify --file FILE` plus each `(option, path)` of `extra`, with
/// every service address unreachable: the check needs no service.
fn verify(file: &Path, extra: &[(&str, &Path)]) -> Output {
    offline(&[("--file", file)], extra)
}

/// `subsidyctl -o json ledger verify FILE` (the export as the positional argument) plus each
/// `(option, path)` of `extra`, with every service address unreachable.
fn verify_positional(file: &Path, extra: &[(&str, &Path)]) -> Output {
    offline(&[("", file)], extra)
}

/// `subsidyctl -o json ledger verify` with each `(option, path)` of `first` then of `extra` (an
/// empty option: the path alone), with every service address unreachable.
fn offline(first: &[(&str, &Path)], extra: &[(&str, &Path)]) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_subsidyctl"));
    command
        .args(["-o", "json", "ledger", "verify"])
        .env("SUBSIDY_APPLICATION_URL", "https://127.0.0.1:1")
        .env("SUBSIDY_BUDGET_URL", "https://127.0.0.1:1")
        .env_remove("SUBSIDY_DATA_DIR");
    for (option, path) in first.iter().chain(extra) {
        if !option.is_empty() {
            command.arg(option);
        }
        command.arg(path);
    }
    command.output().expect("run subsidyctl")
}

/// `docs/ledger/verify_hashes.py FILE`: an auditor's own code, written from docs/LEDGER.md alone
/// (its Python block and its description of version 1), recomputing every entry's hash.
fn independent(file: &Path) -> Output {
    std::process::Command::new("python3")
        .arg(support::repo_root().join("docs/ledger/verify_hashes.py"))
        .arg(file)
        .output()
        .expect("python3 runs")
}

/// The standard error of a verification that must fail with exit code 1.
#[track_caller]
fn refused(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(1),
        "exit code; stdout {} stderr {stderr}",
        String::from_utf8_lossy(&output.stdout)
    );
    stderr
}

/// Asserts that `stderr` holds `expected`.
#[track_caller]
fn names(stderr: &str, expected: &str) {
    assert!(
        stderr.contains(expected),
        "expected {expected:?} in:\n{stderr}"
    );
}

/// Writes `lines` to `dir/name`, one per line.
fn write(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(&path, text).unwrap();
    path
}

/// Whether an exported line is a checkpoint (it carries a signature) rather than an entry.
fn is_checkpoint(line: &str) -> bool {
    serde_json::from_str::<Value>(line).unwrap()["signature"].is_string()
}

fn decimal(fen: i64) -> String {
    Money::from_fen(fen).unwrap().to_string()
}

/// `entries` rewritten as someone who can write the database but holds no key would: the
/// last entry, a commitment, commits [`DIVERTED_FEN`] less and returns it to the pool, and
/// every entry's `previousHash` and `entryHash` are recomputed under its hash version
/// (through the budget's own hash of an entry, docs/LEDGER.md), so that the chain and the
/// balances are consistent again.
fn rewritten_consistently(entries: &[String]) -> Vec<String> {
    let mut previous = GENESIS_HASH.to_owned();
    let last = entries.len() - 1;
    entries
        .iter()
        .enumerate()
        .map(|(index, line)| {
            let (mut entry, _) = parse_line(line).unwrap();
            let mut value: Value = serde_json::from_str(line).unwrap();
            if index == last {
                assert_eq!(entry.kind, "COMMITTED", "{line}");
                entry.amount_fen -= DIVERTED_FEN;
                entry.released_fen += DIVERTED_FEN;
                entry.committed_after_fen -= DIVERTED_FEN;
                value["amount"] = decimal(entry.amount_fen).into();
                value["releasedAmount"] = decimal(entry.released_fen).into();
                value["committedAfter"] = decimal(entry.committed_after_fen).into();
            }
            entry.previous_hash = previous.clone();
            previous = entry.hash().expect("a known hash version");
            value["previousHash"] = entry.previous_hash.clone().into();
            value["entryHash"] = previous.clone().into();
            value.to_string()
        })
        .collect()
}

/// The checkpoint `subsidyctl -o json ledger checkpoint --pool POOL` made now.
fn checkpoint(dev: &Dev, pool: &str) -> Value {
    let answer = json(&dev.run(&args(&[
        "-o",
        "json",
        "ledger",
        "checkpoint",
        "--pool",
        pool,
    ])));
    assert_eq!(answer["created"], true, "{answer}");
    answer["checkpoint"].clone()
}

/// The lines of `ledger export --pool POOL`, written under `dir`.
fn export(dev: &Dev, dir: &Path, pool: &str) -> Vec<String> {
    let out = dir.join(format!("{pool}.jsonl"));
    succeeded(&dev.run(&[
        "ledger".into(),
        "export".into(),
        "--pool".into(),
        pool.into(),
        "--out".into(),
        out.display().to_string(),
    ]));
    std::fs::read_to_string(out)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_signed_export_verifies_and_every_documented_forgery_is_named() {
    // Proves: an export with two checkpoints of the voucher pool verifies offline with the dev
    // stack's public key; an amount changed, an entry deleted, two entries reordered, a chain
    // rewritten consistently without the key (which verifies by itself), another pool's
    // checkpoint, an older signature on a newer head, checkpoints out of order, a wrong or a
    // missing public key, and entries lost from the end with their checkpoint (against one
    // held elsewhere) each fail with exit code 1 and the message naming what is wrong.
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Dev::start(&dir.path().join("data"));
    dev.wait_serving();
    let public_key = dev.data_dir.join(DEV_PUBLIC_KEY_FILE);

    // Money moves: the example claim holds 100,000.00; a checkpoint signs that head; the
    // approval on 1,500,000.00 verified commits 75,000.00; a second checkpoint signs that.
    let claim_id = dev.submit_example_claim();
    let before = checkpoint(&dev, VOUCHER_POOL);
    dev.approve(&claim_id, "1500000.00");
    let after = checkpoint(&dev, VOUCHER_POOL);
    let other = checkpoint(&dev, DATA_POOL);
    assert_eq!(before["sequence"], 2, "{before}");
    assert_eq!(after["sequence"], 3, "{after}");
    assert_eq!(after["committed"], "75000.00", "{after}");

    // The export: the pool's entries, then its two checkpoints in the order they were made.
    let lines = export(&dev, dir.path(), VOUCHER_POOL);
    let (checkpoints, entries): (Vec<String>, Vec<String>) =
        lines.iter().cloned().partition(|line| is_checkpoint(line));
    assert_eq!(entries.len(), 3, "{lines:#?}");
    assert_eq!(checkpoints.len(), 2, "{lines:#?}");
    assert_eq!(lines[..3], entries[..], "entries come first");
    let line_of = |checkpoint: &Value| {
        let sequence = checkpoint["sequence"].as_i64().unwrap();
        let number = lines
            .iter()
            .position(|line| {
                is_checkpoint(line)
                    && serde_json::from_str::<Value>(line).unwrap()["sequence"] == sequence
            })
            .unwrap();
        number + 1
    };
    let (before_line, after_line) = (line_of(&before), line_of(&after));
    assert_eq!((before_line, after_line), (4, 5));
    let other_line = export(&dev, dir.path(), DATA_POOL)
        .into_iter()
        .find(|line| is_checkpoint(line))
        .expect("the data pool's checkpoint is exported");
    drop(dev);

    // Checkpoints held elsewhere: as `ledger checkpoint` printed them.
    let held_after = dir.path().join("held-after.json");
    std::fs::write(&held_after, after.to_string()).unwrap();
    let held_other = dir.path().join("held-other-pool.json");
    std::fs::write(&held_other, other.to_string()).unwrap();
    let key: &[(&str, &Path)] = &[("--public-key", &public_key)];

    // As exported: intact, both checkpoints matched, the head the second one signed.
    let exported = write(dir.path(), "exported.jsonl", &lines);
    let verified = json(&verify(&exported, key));
    assert_eq!(verified[0]["poolId"], VOUCHER_POOL, "{verified}");
    assert_eq!(verified[0]["entries"], 3, "{verified}");
    assert_eq!(verified[0]["checkpoints"], 2, "{verified}");
    assert_eq!(verified[0]["committed"], "75000.00", "{verified}");
    assert_eq!(verified[0]["headHash"], after["headHash"], "{verified}");
    let with_held = [key, &[("--checkpoint", &held_after)]].concat();
    let with_file = json(&verify(&exported, &with_held));
    // `ledger verify FILE`, the export as the positional argument, says the same; the file
    // given twice (positionally and with --file), or a key without a file, is a usage error.
    assert_eq!(json(&verify_positional(&exported, &with_held)), with_file);
    let twice = verify_positional(&exported, &[("--file", &exported)]);
    assert_eq!(twice.status.code(), Some(2), "{twice:?}");
    let no_file = offline(&[], key);
    assert_eq!(no_file.status.code(), Some(2), "{no_file:?}");
    let label = |path: &Path, line: usize| format!("{}:{line}", path.display());

    // An amount changed in one entry: its hash no longer matches its content.
    let mut tampered = lines.clone();
    assert!(
        tampered[1].contains(r#""amount":"100000.00""#),
        "{}",
        tampered[1]
    );
    tampered[1] = tampered[1].replace(r#""amount":"100000.00""#, r#""amount":"10000.00""#);
    let file = write(dir.path(), "tampered.jsonl", &tampered);
    names(
        &refused(&verify(&file, key)),
        &format!(
            "{}: BROKEN at pool {VOUCHER_POOL} sequence 2: entry_hash does not match the entry's content",
            label(&file, 2)
        ),
    );

    // An entry deleted: the chain skips its sequence.
    let mut deleted = lines.clone();
    deleted.remove(1);
    let file = write(dir.path(), "deleted.jsonl", &deleted);
    names(
        &refused(&verify(&file, key)),
        &format!(
            "{}: BROKEN at pool {VOUCHER_POOL} sequence 3: sequence 3 follows 1",
            label(&file, 2)
        ),
    );

    // Two entries reordered: the first out of place is named.
    let mut reordered = lines.clone();
    reordered.swap(0, 1);
    let file = write(dir.path(), "reordered.jsonl", &reordered);
    names(
        &refused(&verify(&file, key)),
        &format!(
            "{}: BROKEN at pool {VOUCHER_POOL} sequence 2: sequence 2 follows 0",
            label(&file, 1)
        ),
    );

    // The chain rewritten consistently without the key: it verifies by itself, and shows the
    // diverted commitment; the export's own checkpoint and one held elsewhere both name the
    // rewrite.
    let forged = rewritten_consistently(&entries);
    let forged_hash = serde_json::from_str::<Value>(&forged[2]).unwrap()["entryHash"].clone();
    assert_ne!(forged_hash, after["headHash"]);
    let file = write(dir.path(), "rewritten-chain.jsonl", &forged);
    let alone = json(&verify(&file, &[]));
    assert_eq!(
        alone[0]["committed"],
        decimal(7_500_000 - DIVERTED_FEN),
        "{alone}"
    );
    let rewrite = |label: String| {
        format!(
            "{label}: BROKEN checkpoint of pool {VOUCHER_POOL} at sequence 3: head hash {} differs from entry 3's hash {}: the chain was rewritten",
            after["headHash"].as_str().unwrap(),
            forged_hash.as_str().unwrap()
        )
    };
    names(
        &refused(&verify(&file, &with_held)),
        &rewrite(held_after.display().to_string()),
    );
    let with_checkpoints = [forged, checkpoints.clone()].concat();
    let file = write(dir.path(), "rewritten.jsonl", &with_checkpoints);
    names(
        &refused(&verify(&file, key)),
        &rewrite(label(&file, after_line)),
    );

    // Another pool's checkpoint in place of the pool's own: that pool has no entry here.
    let mut swapped = lines.clone();
    swapped[after_line - 1] = other_line;
    let file = write(dir.path(), "other-pool.jsonl", &swapped);
    names(
        &refused(&verify(&file, key)),
        &format!(
            "{}: BROKEN checkpoint of pool {DATA_POOL} at sequence 1: the chain holds no entry of this pool",
            label(&file, after_line)
        ),
    );
    names(
        &refused(&verify(
            &exported,
            &[key, &[("--checkpoint", &held_other)]].concat(),
        )),
        &format!(
            "{}: BROKEN checkpoint of pool {DATA_POOL} at sequence 1: the chain holds no entry of this pool",
            held_other.display()
        ),
    );

    // The older checkpoint's signature on the newer head: the signature does not verify.
    let mut resigned: Value = serde_json::from_str(&lines[after_line - 1]).unwrap();
    resigned["signature"] = before["signature"].clone();
    let mut older_signature = lines.clone();
    older_signature[after_line - 1] = resigned.to_string();
    let file = write(dir.path(), "older-signature.jsonl", &older_signature);
    names(
        &refused(&verify(&file, key)),
        &format!(
            "{}: BROKEN checkpoint of pool {VOUCHER_POOL} at sequence 3: the signature does not verify: a signed field was changed",
            label(&file, after_line)
        ),
    );

    // The older checkpoint after the newer one.
    let mut out_of_order = lines.clone();
    out_of_order.swap(before_line - 1, after_line - 1);
    let file = write(dir.path(), "out-of-order.jsonl", &out_of_order);
    names(
        &refused(&verify(&file, key)),
        &format!(
            "{}: BROKEN checkpoint of pool {VOUCHER_POOL} at sequence 2: follows the pool's checkpoint {} at sequence 3 but is not newer: an older checkpoint in a newer one's place",
            label(&file, after_line),
            label(&file, before_line)
        ),
    );

    // A wrong public key names the key that signed and the keys given; none is refused; the
    // right key among others (a rotation) is accepted.
    let stranger = CheckpointSigner::from_seed(Algorithm::Ed25519, &[1; 32]).unwrap();
    let stranger_key = dir.path().join("stranger-public.pem");
    std::fs::write(&stranger_key, stranger.public_key().to_pem()).unwrap();
    names(
        &refused(&verify(&exported, &[("--public-key", &stranger_key)])),
        &format!(
            "{}: BROKEN checkpoint of pool {VOUCHER_POOL} at sequence 2: signed by key {}, which is not among the public keys given ({})",
            label(&exported, before_line),
            before["keyId"].as_str().unwrap(),
            stranger.public_key().key_id()
        ),
    );
    names(
        &refused(&verify(&exported, &[])),
        &format!(
            "{}: the export holds signed checkpoints: give the budget's public key with --public-key",
            label(&exported, before_line)
        ),
    );
    json(&verify(
        &exported,
        &[key, &[("--public-key", &stranger_key)]].concat(),
    ));

    // The database lost its tail: a fresh export lacks the last entry and the checkpoint that
    // signed it. By itself it verifies (the limit docs/LEDGER.md states); the checkpoint held
    // elsewhere names the sequence the export lacks.
    let truncated: Vec<String> = lines
        .iter()
        .enumerate()
        .filter(|(index, _)| *index != 2 && *index != after_line - 1)
        .map(|(_, line)| line.clone())
        .collect();
    let file = write(dir.path(), "lost-tail.jsonl", &truncated);
    let alone = json(&verify(&file, key));
    assert_eq!(alone[0]["headSequence"], 2, "{alone}");
    assert_eq!(alone[0]["checkpoints"], 1, "{alone}");
    names(
        &refused(&verify(&file, &with_held)),
        &format!(
            "{}: BROKEN checkpoint of pool {VOUCHER_POOL} at sequence 3: the chain ends at sequence 2: entries signed by this checkpoint are missing",
            held_after.display()
        ),
    );
}

/// The lines `ledger export` writes for every entry of `budget`'s ledger.
async fn exported_lines(budget: &subsidy_budget::Budget) -> Vec<String> {
    budget
        .list_ledger("", 0, 1000)
        .await
        .unwrap()
        .iter()
        .map(|stored| {
            subsidy::ctl::json::message(&subsidy_budget::wire::ledger_entry(stored)).to_string()
        })
        .collect()
}

#[test]
fn an_export_with_an_extension_and_a_revocation_verifies_and_a_changed_revocation_is_named() {
    // Proves: entries of kinds EXTENDED (with its new expiry) and REVOKED, written by the
    // budget itself and exported as `ledger export` writes them, verify offline; a REVOKED
    // amount changed in the file breaks its hash, and the same change rehashed consistently
    // (no key needed without checkpoints) is caught by the replayed balances.
    use subsidy_budget::domain::{Commit, Extend, NewPool, PoolId, Reserve, Revoke};
    use subsidy_budget::ops::Who;
    use subsidy_common::{RequestId, uscc};
    use subsidy_proto::budget as pb;

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let lines = runtime.block_on(async {
        let url = subsidy_common::db::testing::fresh_database("cli_ledger_revoke")
            .await
            .url;
        let db = subsidy_common::db::Db::connect(&url, 4, std::time::Duration::from_secs(10))
            .await
            .unwrap();
        let store = subsidy_budget::Store::new(db);
        store.migrate().await.unwrap();
        let budget = subsidy_budget::Budget::new(store);
        let pool_id = PoolId::parse("revoked-pool").unwrap();
        budget
            .ensure_pool(&NewPool {
                pool_id: pool_id.clone(),
                display_name: "revocations".into(),
                total: Money::from_fen(1_000_000).unwrap(),
                beneficiary_cap: None,
                reservation_cap: None,
                default_hold_seconds: 3600,
            })
            .await
            .unwrap();
        let who = Who::system("service:application");
        let id = |text: &str| RequestId::parse(text).unwrap();
        let respond = |r: &subsidy_budget::domain::Reservation| pb::Reservation {
            reservation_id: r.reservation_id.clone(),
            ..Default::default()
        };
        let held = budget
            .reserve(
                &Reserve {
                    request_id: id("r1"),
                    pool_id,
                    beneficiary: uscc::complete("91370100MA0000001"),
                    amount: Money::from_fen(400_000).unwrap(),
                    reference: "claim-1".into(),
                    hold_seconds: Some(60),
                },
                "r1",
                &who,
                respond,
            )
            .await
            .unwrap()
            .reservation_id;
        let extend = Extend {
            request_id: id("e1"),
            reservation_id: held.clone(),
            hold_seconds: Some(7200),
        };
        budget.extend(&extend, "e1", &who, respond).await.unwrap();
        let commit = Commit {
            request_id: id("c1"),
            reservation_id: held.clone(),
            amount: Money::from_fen(300_000).unwrap(),
        };
        budget.commit(&commit, "c1", &who, respond).await.unwrap();
        let revoke = Revoke {
            request_id: id("v1"),
            reservation_id: held,
            reason: "objection upheld".into(),
        };
        budget.revoke(&revoke, "v1", &who, respond).await.unwrap();
        exported_lines(&budget).await
    });
    let kinds: Vec<String> = lines
        .iter()
        .map(|line| parse_line(line).unwrap().0.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            "POOL_CREATED",
            "RESERVED",
            "EXTENDED",
            "COMMITTED",
            "REVOKED"
        ]
    );
    assert!(lines[2].contains("expireTime"), "{}", lines[2]);
    let dir = tempfile::tempdir().unwrap();
    let exported = write(dir.path(), "revoked.jsonl", &lines);
    let verified = json(&verify(&exported, &[]));
    assert_eq!(verified[0]["entries"], 5, "{verified}");
    assert_eq!(verified[0]["committed"], "0.00", "{verified}");
    // The same hashes from docs/LEDGER.md alone, the EXTENDED one with its new expiry.
    let said = succeeded(&independent(&exported));
    for line in [
        "5 entries match docs/LEDGER.md",
        "version 2 POOL_CREATED: 1",
        "version 2 RESERVED: 1",
        "version 2 EXTENDED: 1",
        "version 2 COMMITTED: 1",
        "version 2 REVOKED: 1",
    ] {
        names(&said, line);
    }

    // The REVOKED amount changed: its hash no longer matches.
    let mut tampered = lines.clone();
    assert!(
        tampered[4].contains(r#""amount":"3000.00""#),
        "{}",
        tampered[4]
    );
    tampered[4] = tampered[4].replace(r#""amount":"3000.00""#, r#""amount":"2000.00""#);
    let file = write(dir.path(), "revoked-tampered.jsonl", &tampered);
    names(
        &refused(&verify(&file, &[])),
        "sequence 5: entry_hash does not match the entry's content",
    );
    let said = independent(&file);
    assert_eq!(said.status.code(), Some(1), "{said:?}");
    names(
        &String::from_utf8_lossy(&said.stdout),
        "line 5: entry_hash differs from docs/LEDGER.md's encoding (version 2, REVOKED)",
    );
    // An extension moved later in the file: the expiry is hashed too.
    let mut later = lines.clone();
    let mut extended: Value = serde_json::from_str(&later[2]).unwrap();
    let expires = chrono::DateTime::parse_from_rfc3339(extended["expireTime"].as_str().unwrap())
        .unwrap()
        + chrono::Duration::days(30);
    extended["expireTime"] = expires
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        .into();
    later[2] = extended.to_string();
    let said = independent(&write(dir.path(), "extended-later.jsonl", &later));
    assert_eq!(said.status.code(), Some(1), "{said:?}");
    names(
        &String::from_utf8_lossy(&said.stdout),
        "line 3: entry_hash differs from docs/LEDGER.md's encoding (version 2, EXTENDED)",
    );

    // The same change with the hash recomputed: the balances say it is a lie.
    let (mut entry, _) = parse_line(&tampered[4]).unwrap();
    entry.committed_after_fen += 100_000;
    let mut value: Value = serde_json::from_str(&tampered[4]).unwrap();
    value["committedAfter"] = decimal(entry.committed_after_fen).into();
    value["entryHash"] = entry.hash().unwrap().into();
    tampered[4] = value.to_string();
    let file = write(dir.path(), "revoked-rehashed.jsonl", &tampered);
    names(&refused(&verify(&file, &[])), "this REVOKED returns 200000");
}

#[test]
fn the_auditors_python_recomputes_the_documented_vectors_of_both_hash_versions() {
    // Proves: docs/ledger/verify_hashes.py, from docs/LEDGER.md alone, gets the page's test
    // vectors (version 2 RESERVED and EXTENDED, version 1) from entries as `ledger export`
    // writes them, and names a version-1 entry whose text was changed.
    let entry = |kind: &str, version: u32, hash: &str| {
        let mut value = serde_json::json!({
            "poolId": "p", "sequence": 1, "kind": format!("LEDGER_ENTRY_KIND_{kind}"),
            "reservationId": "r", "beneficiaryUscc": "u", "actor": "a", "requestId": "q",
            "amount": "0.01", "heldAfter": "0.01",
            "createTime": "1970-01-01T00:00:00.000005Z",
            "previousHash": GENESIS_HASH, "hashVersion": version, "entryHash": hash,
        });
        if kind == "EXTENDED" {
            value["amount"] = "0.00".into();
            value["heldBefore"] = "0.01".into();
            value["expireTime"] = "1970-01-01T00:00:00.000007Z".into();
        }
        value.to_string()
    };
    let vectors = [
        entry(
            "RESERVED",
            2,
            "0094d3ca3972b9a21edc986dd17c175a29fa53dc65fd35ef3c78d2f19ef4b100",
        ),
        entry(
            "EXTENDED",
            2,
            "5cdb8775f718641e772c188c01a8294e02867b5f2ad0c1ad24b5889e78beffa1",
        ),
        entry(
            "RESERVED",
            1,
            "7c286fe89493b2f5b0b333ba28b6ceebf50acd15f5a83def002583fe596bb8d3",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let said = succeeded(&independent(&write(dir.path(), "vectors.jsonl", &vectors)));
    for line in [
        "3 entries match docs/LEDGER.md",
        "version 1 RESERVED: 1",
        "version 2 EXTENDED: 1",
        "version 2 RESERVED: 1",
    ] {
        names(&said, line);
    }
    let changed = [vectors[2].replace(r#""actor":"a""#, r#""actor":"b""#)];
    let said = independent(&write(dir.path(), "v1-changed.jsonl", &changed));
    assert_eq!(said.status.code(), Some(1), "{said:?}");
    names(
        &String::from_utf8_lossy(&said.stdout),
        "line 1: entry_hash differs from docs/LEDGER.md's encoding (version 1, RESERVED)",
    );
}

#[test]
fn an_sm2_signed_export_verifies_with_the_sm2_public_key_and_a_tampered_one_is_named() {
    // Proves the SM2/SM3 choice end to end on the auditor's path: `subsidy dev` started with
    // an SM2 PKCS#8 key made by `openssl genpkey -algorithm SM2` as
    // SUBSIDY_BUDGET_CHECKPOINT_KEY_FILE and SUBSIDY_BUDGET_CHECKPOINT_ALGORITHM=sm2-sm3 signs
    // an SM2 checkpoint; `ledger export` writes it; `ledger verify FILE --public-key` with the
    // SM2 public key OpenSSL derives passes offline, also against the checkpoint held
    // elsewhere; a changed amount, a changed signature, the algorithm relabelled, the chain
    // rewritten consistently without the key, and an Ed25519 key instead of the SM2 one each
    // fail with exit code 1, named.
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
    };
    openssl(&["genpkey", "-algorithm", "SM2", "-out", "sm2.pem"]);
    openssl(&[
        "pkey",
        "-in",
        "sm2.pem",
        "-pubout",
        "-out",
        "sm2-public.pem",
    ]);
    let private_key = dir.path().join("sm2.pem");
    let public_key = dir.path().join("sm2-public.pem");
    let sm2 = subsidy_budget::domain::checkpoint::PublicKey::from_pem(
        &std::fs::read_to_string(&public_key).unwrap(),
    )
    .unwrap();
    assert_eq!(sm2.algorithm(), Algorithm::Sm2Sm3);

    let mut dev = Dev::start_with_env(
        &dir.path().join("data"),
        &[
            (
                subsidy_budget::settings::CHECKPOINT_KEY_FILE_ENV,
                private_key.to_str().unwrap(),
            ),
            (
                subsidy_budget::settings::CHECKPOINT_ALGORITHM_ENV,
                "sm2-sm3",
            ),
        ],
    );
    dev.wait_serving();
    assert!(
        !dev.data_dir.join(DEV_PUBLIC_KEY_FILE).exists(),
        "no development Ed25519 key is made when a key file is named"
    );
    let claim_id = dev.submit_example_claim();
    dev.approve(&claim_id, "1500000.00");
    let made = checkpoint(&dev, VOUCHER_POOL);
    assert_eq!(made["algorithm"], "CHECKPOINT_ALGORITHM_SM2_SM3", "{made}");
    assert_eq!(made["keyId"], sm2.key_id(), "{made}");
    assert_eq!(made["sequence"], 3, "{made}");
    let lines = export(&dev, dir.path(), VOUCHER_POOL);
    drop(dev);
    assert_eq!(
        lines.len(),
        4,
        "three entries and the checkpoint: {lines:#?}"
    );
    assert!(is_checkpoint(&lines[3]), "{}", lines[3]);
    let held = dir.path().join("held-sm2.json");
    std::fs::write(&held, made.to_string()).unwrap();
    let key: &[(&str, &Path)] = &[("--public-key", &public_key)];
    let with_held = [key, &[("--checkpoint", &held)]].concat();

    // As exported: intact, the SM2 checkpoint verified and matched, also the one held.
    let exported = write(dir.path(), "sm2.jsonl", &lines);
    let verified = json(&verify_positional(&exported, key));
    assert_eq!(verified[0]["poolId"], VOUCHER_POOL, "{verified}");
    assert_eq!(verified[0]["entries"], 3, "{verified}");
    assert_eq!(verified[0]["checkpoints"], 1, "{verified}");
    assert_eq!(verified[0]["committed"], "75000.00", "{verified}");
    assert_eq!(verified[0]["headHash"], made["headHash"], "{verified}");
    json(&verify_positional(&exported, &with_held));
    let label = |path: &Path, line: usize| format!("{}:{line}", path.display());

    // An amount changed in an entry.
    let mut tampered = lines.clone();
    assert!(
        tampered[1].contains(r#""amount":"100000.00""#),
        "{}",
        tampered[1]
    );
    tampered[1] = tampered[1].replace(r#""amount":"100000.00""#, r#""amount":"10000.00""#);
    let file = write(dir.path(), "sm2-amount.jsonl", &tampered);
    names(
        &refused(&verify_positional(&file, key)),
        &format!(
            "{}: BROKEN at pool {VOUCHER_POOL} sequence 2: entry_hash does not match the entry's content",
            label(&file, 2)
        ),
    );

    // The SM2 signature changed (its last byte, in `s`): it no longer verifies.
    let mut resigned: Value = serde_json::from_str(&lines[3]).unwrap();
    let engine = base64::engine::general_purpose::STANDARD;
    let mut signature = base64::Engine::decode(&engine, resigned["signature"].as_str().unwrap())
        .expect("the signature is base64");
    assert_eq!(signature.len(), 64, "r then s, 32 bytes each");
    signature[63] ^= 1;
    resigned["signature"] = base64::Engine::encode(&engine, &signature).into();
    let mut changed = lines.clone();
    changed[3] = resigned.to_string();
    let file = write(dir.path(), "sm2-signature.jsonl", &changed);
    names(
        &refused(&verify_positional(&file, key)),
        &format!(
            "{}: BROKEN checkpoint of pool {VOUCHER_POOL} at sequence 3: the signature does not verify: a signed field was changed",
            label(&file, 4)
        ),
    );

    // The checkpoint relabelled as Ed25519: the SM2 key does not verify that algorithm.
    let mut relabelled: Value = serde_json::from_str(&lines[3]).unwrap();
    relabelled["algorithm"] = "CHECKPOINT_ALGORITHM_ED25519".into();
    let mut changed = lines.clone();
    changed[3] = relabelled.to_string();
    let file = write(dir.path(), "sm2-relabelled.jsonl", &changed);
    names(
        &refused(&verify_positional(&file, key)),
        &format!(
            "{}: BROKEN checkpoint of pool {VOUCHER_POOL} at sequence 3: algorithm ed25519 does not match key {} (sm2-sm3)",
            label(&file, 4),
            sm2.key_id()
        ),
    );

    // The chain rewritten consistently without the key: the SM2 checkpoint names the rewrite.
    let forged = rewritten_consistently(&lines[..3]);
    let forged_hash = serde_json::from_str::<Value>(&forged[2]).unwrap()["entryHash"].clone();
    let file = write(
        dir.path(),
        "sm2-rewritten.jsonl",
        &[forged, vec![lines[3].clone()]].concat(),
    );
    names(
        &refused(&verify_positional(&file, key)),
        &format!(
            "{}: BROKEN checkpoint of pool {VOUCHER_POOL} at sequence 3: head hash {} differs from entry 3's hash {}: the chain was rewritten",
            label(&file, 4),
            made["headHash"].as_str().unwrap(),
            forged_hash.as_str().unwrap()
        ),
    );

    // An Ed25519 key in place of the SM2 one: the checkpoint's key is not among those given.
    let stranger = CheckpointSigner::from_seed(Algorithm::Ed25519, &[1; 32]).unwrap();
    let stranger_key = dir.path().join("ed25519-public.pem");
    std::fs::write(&stranger_key, stranger.public_key().to_pem()).unwrap();
    names(
        &refused(&verify_positional(
            &exported,
            &[("--public-key", &stranger_key)],
        )),
        &format!(
            "{}: BROKEN checkpoint of pool {VOUCHER_POOL} at sequence 3: signed by key {}, which is not among the public keys given ({})",
            label(&exported, 4),
            sm2.key_id(),
            stranger.public_key().key_id()
        ),
    );
}
