//! `subsidyctl ledger verify FILE`: an export checked with no service and no database. Each
//! line is one `LedgerEntry` or one `LedgerCheckpoint` in proto3 JSON as `ledger export` writes
//! them (amounts as decimal strings, see docs/LEDGER.md); the entries are replayed in order by
//! the budget's own pure replay: every hash under its version, every pool's chain, and the
//! balances. Every checkpoint's signature is checked with the public keys given, and each
//! checkpoint (of the export, and any held elsewhere, `--checkpoint`) against the chain at its
//! sequence: head hash and counters.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::Value;
use subsidy_budget::domain::LedgerEntry;
use subsidy_budget::domain::checkpoint::{
    self, Algorithm, ChainWitness, Checkpoint, CheckpointProblem, Head, PublicKey,
};
use subsidy_budget::domain::replay::Replay;
use subsidy_common::{BoxError, Money};

use super::{Ctx, money, print};

/// The prefix of the kind names in the export.
const KIND_PREFIX: &str = "LEDGER_ENTRY_KIND_";

/// Reads one exported line into the entry and its stored hash.
pub fn parse_line(line: &str) -> Result<(LedgerEntry, String), String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let text = |key: &str| -> Result<String, String> {
        match value.get(key) {
            None => Ok(String::new()),
            Some(Value::String(text)) => Ok(text.clone()),
            Some(other) => Err(format!("{key} is not text: {other}")),
        }
    };
    let int = |key: &str| -> Result<i64, String> {
        match value.get(key) {
            None => Ok(0),
            Some(Value::Number(n)) => n.as_i64().ok_or(format!("{key} is not an integer")),
            Some(Value::String(s)) => s.parse().map_err(|_| format!("{key} is not an integer")),
            Some(other) => Err(format!("{key} is not an integer: {other}")),
        }
    };
    let fen = |key: &str| -> Result<i64, String> {
        match value.get(key) {
            None => Ok(0),
            Some(Value::String(text)) => text
                .parse::<Money>()
                .map(Money::fen)
                .map_err(|e| format!("{key} {text:?} is not an amount: {e}")),
            Some(other) => Err(format!("{key} is not a decimal string: {other}")),
        }
    };
    let created = text("createTime")?;
    let created_us = chrono::DateTime::parse_from_rfc3339(&created)
        .map_err(|_| format!("createTime {created:?} is not RFC 3339"))?
        .timestamp_micros();
    let kind = text("kind")?;
    let entry = LedgerEntry {
        pool_id: text("poolId")?,
        sequence: int("sequence")?,
        kind: kind.strip_prefix(KIND_PREFIX).unwrap_or(&kind).to_owned(),
        reservation_id: text("reservationId")?,
        beneficiary_uscc: text("beneficiaryUscc")?,
        actor: text("actor")?,
        request_id: text("requestId")?,
        amount_fen: fen("amount")?,
        released_fen: fen("releasedAmount")?,
        held_before_fen: fen("heldBefore")?,
        held_after_fen: fen("heldAfter")?,
        committed_before_fen: fen("committedBefore")?,
        committed_after_fen: fen("committedAfter")?,
        created_us,
        previous_hash: text("previousHash")?,
        hash_version: int("hashVersion")?,
        expires_us: match value.get("expireTime") {
            None => None,
            Some(_) => {
                let expires = text("expireTime")?;
                let expires = chrono::DateTime::parse_from_rfc3339(&expires)
                    .map_err(|_| format!("expireTime {expires:?} is not RFC 3339"))?;
                Some(expires.timestamp_micros())
            }
        },
    };
    Ok((entry, text("entryHash")?))
}

/// The prefix of the algorithm names in the export.
const ALGORITHM_PREFIX: &str = "CHECKPOINT_ALGORITHM_";

/// Whether an exported line (or a held file) is a checkpoint rather than an entry.
fn is_checkpoint(value: &Value) -> bool {
    value.get("signature").is_some() || value.pointer("/data/payload/signature").is_some()
}

/// Reads a checkpoint from any of its JSON forms: a line of `ledger export` (proto3 JSON,
/// lowerCamelCase), the payload of a `ledger.checkpoint` event (snake_case, every value text),
/// or the whole webhook body (`data.payload`).
pub fn parse_checkpoint(value: &Value) -> Result<Checkpoint, String> {
    let value = value.pointer("/data/payload").unwrap_or(value);
    let field = |snake: &str, camel: &str| value.get(snake).or_else(|| value.get(camel));
    let text = |snake: &str, camel: &str| -> Result<String, String> {
        match field(snake, camel) {
            Some(Value::String(text)) => Ok(text.clone()),
            None => Ok(String::new()),
            Some(other) => Err(format!("{snake} is not text: {other}")),
        }
    };
    let sequence = match field("sequence", "sequence") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .ok_or("sequence is not an integer")?;
    let fen = |key: &str| -> Result<i64, String> {
        let text = text(key, key)?;
        text.parse::<Money>()
            .map(Money::fen)
            .map_err(|e| format!("{key} {text:?} is not an amount: {e}"))
    };
    let created = text("create_time", "createTime")?;
    let created_us = chrono::DateTime::parse_from_rfc3339(&created)
        .map_err(|_| format!("create_time {created:?} is not RFC 3339"))?
        .timestamp_micros();
    let algorithm = text("algorithm", "algorithm")?;
    let named = algorithm
        .strip_prefix(ALGORITHM_PREFIX)
        .map(|name| name.to_ascii_lowercase().replace('_', "-"))
        .unwrap_or_else(|| algorithm.clone());
    let signature = base64::engine::general_purpose::STANDARD
        .decode(text("signature", "signature")?)
        .map_err(|_| "signature is not base64".to_owned())?;
    Ok(Checkpoint {
        head: Head {
            pool_id: text("pool_id", "poolId")?,
            sequence,
            head_hash: text("head_hash", "headHash")?,
            total_fen: fen("total")?,
            held_fen: fen("held")?,
            committed_fen: fen("committed")?,
            created_us,
        },
        algorithm: Algorithm::parse(&named)
            .ok_or_else(|| format!("unknown algorithm {algorithm:?}"))?,
        key_id: text("key_id", "keyId")?,
        signature,
    })
}

/// A checkpoint problem, as printed: where, which checkpoint, what.
fn broken_checkpoint(problem: &CheckpointProblem) -> String {
    format!(
        "{}: BROKEN checkpoint of pool {} at sequence {}: {}",
        problem.label, problem.pool_id, problem.sequence, problem.what
    )
}

/// The lines of `path`, numbered from 1, blank lines left out.
fn lines(path: &Path) -> Result<impl Iterator<Item = (usize, std::io::Result<String>)>, BoxError> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(std::io::BufReader::new(file)
        .lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line))
        .filter(|(_, line)| line.as_ref().map_or(true, |line| !line.trim().is_empty())))
}

/// The checkpoints of the export at `path`, each checked against `keys` and labelled by its
/// line, in file order.
fn export_checkpoints(
    path: &Path,
    keys: &[PublicKey],
) -> Result<Vec<(String, Checkpoint)>, BoxError> {
    let mut found = Vec::new();
    for (number, line) in lines(path)? {
        let value: Value = serde_json::from_str(&line?)
            .map_err(|e| format!("{}:{number}: not JSON: {e}", path.display()))?;
        if !is_checkpoint(&value) {
            continue;
        }
        let label = format!("{}:{number}", path.display());
        let checkpoint = parse_checkpoint(&value).map_err(|e| format!("{label}: {e}"))?;
        signed(&label, keys, &checkpoint)?;
        found.push((label, checkpoint));
    }
    Ok(found)
}

/// Checks the signature of a checkpoint; the error names it.
fn signed(label: &str, keys: &[PublicKey], checkpoint: &Checkpoint) -> Result<(), BoxError> {
    if keys.is_empty() {
        return Err(format!(
            "{label}: the export holds signed checkpoints: give the budget's public key with --public-key"
        )
        .into());
    }
    checkpoint::verify_with_any(keys, checkpoint).map_err(|what| {
        broken_checkpoint(&CheckpointProblem {
            label: label.to_owned(),
            pool_id: checkpoint.head.pool_id.clone(),
            sequence: checkpoint.head.sequence,
            what,
        })
        .into()
    })
}

/// Replays the export at `path`, showing every entry to `witnesses`; `Err` names the first
/// problem (line, pool, sequence, what).
pub fn replay(path: &Path, witnesses: &mut [&mut ChainWitness]) -> Result<Replay, BoxError> {
    let mut replay = Replay::default();
    for (number, line) in lines(path)? {
        let line = line?;
        let value: Value = serde_json::from_str(&line)
            .map_err(|e| format!("{}:{number}: not JSON: {e}", path.display()))?;
        if is_checkpoint(&value) {
            continue;
        }
        let (entry, hash) =
            parse_line(&line).map_err(|e| format!("{}:{number}: {e}", path.display()))?;
        replay.push(&entry, &hash).map_err(|problem| {
            format!(
                "{}:{number}: BROKEN at pool {} sequence {}: {}",
                path.display(),
                problem.pool_id,
                problem.sequence,
                problem.what
            )
        })?;
        let total_fen = replay.pools()[&entry.pool_id].total_fen;
        for witness in witnesses.iter_mut() {
            witness.observe(&entry, &hash, total_fen);
        }
    }
    Ok(replay)
}

/// Reads the public keys given.
fn public_keys(paths: &[PathBuf]) -> Result<Vec<PublicKey>, BoxError> {
    paths
        .iter()
        .map(|path| {
            let pem = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            PublicKey::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()).into())
        })
        .collect()
}

/// Checks the export's checkpoints and those held elsewhere against the chain; returns the
/// replay and the number of checkpoints of each pool that matched.
fn verify_all(
    path: &Path,
    key_files: &[PathBuf],
    held_files: &[PathBuf],
) -> Result<(Replay, std::collections::BTreeMap<String, usize>), BoxError> {
    let keys = public_keys(key_files)?;
    let mut exported = ChainWitness::default();
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for (label, checkpoint) in export_checkpoints(path, &keys)? {
        exported
            .expect(&label, &checkpoint.head)
            .map_err(|problem| broken_checkpoint(&problem))?;
        *counts.entry(checkpoint.head.pool_id.clone()).or_default() += 1;
    }
    // Checkpoints held elsewhere are each their own witness: they may be older than the
    // export's own.
    let mut held = Vec::new();
    for file in held_files {
        let label = file.display().to_string();
        let text =
            std::fs::read_to_string(file).map_err(|e| format!("cannot read {label}: {e}"))?;
        let value: Value =
            serde_json::from_str(&text).map_err(|e| format!("{label}: not JSON: {e}"))?;
        let checkpoint = parse_checkpoint(&value).map_err(|e| format!("{label}: {e}"))?;
        signed(&label, &keys, &checkpoint)?;
        let mut witness = ChainWitness::default();
        witness
            .expect(&label, &checkpoint.head)
            .map_err(|problem| broken_checkpoint(&problem))?;
        held.push(witness);
    }
    let mut witnesses: Vec<&mut ChainWitness> = std::iter::once(&mut exported)
        .chain(held.iter_mut())
        .collect();
    let replay = replay(path, &mut witnesses)?;
    for witness in std::iter::once(exported).chain(held) {
        witness
            .finish()
            .map_err(|problem| broken_checkpoint(&problem))?;
    }
    Ok((replay, counts))
}

/// `ledger verify FILE`: prints each pool's replayed balances, head and checkpoints matched,
/// or fails naming the first problem.
pub fn verify(
    ctx: &Ctx,
    path: &Path,
    key_files: &[PathBuf],
    held_files: &[PathBuf],
) -> Result<(), BoxError> {
    let (replay, counts) = verify_all(path, key_files, held_files)?;
    let signed = |pool_id: &str| counts.get(pool_id).copied().unwrap_or(0);
    if replay.pools().is_empty() {
        return Err(format!("{} holds no ledger entries", path.display()).into());
    }
    let cny = |fen: i64| Money::from_fen(fen).ok().map(|m| m.to_proto());
    let rows: Vec<Vec<String>> = replay
        .pools()
        .iter()
        .map(|(pool_id, pool)| {
            vec![
                pool_id.clone(),
                pool.entries.to_string(),
                money(&cny(pool.total_fen)),
                money(&cny(pool.held_fen)),
                money(&cny(pool.committed_fen)),
                pool.head.sequence.to_string(),
                pool.head.hash.clone(),
                signed(pool_id).to_string(),
            ]
        })
        .collect();
    let json = || {
        Value::Array(
            replay
                .pools()
                .iter()
                .map(|(pool_id, pool)| {
                    let decimal = |fen: i64| {
                        Money::from_fen(fen)
                            .map(|m| m.to_string())
                            .unwrap_or_default()
                    };
                    serde_json::json!({
                        "poolId": pool_id,
                        "intact": true,
                        "entries": pool.entries,
                        "total": decimal(pool.total_fen),
                        "held": decimal(pool.held_fen),
                        "committed": decimal(pool.committed_fen),
                        "headSequence": pool.head.sequence,
                        "headHash": pool.head.hash,
                        "checkpoints": signed(pool_id),
                    })
                })
                .collect(),
        )
    };
    print(
        ctx,
        &[
            "POOL",
            "ENTRIES",
            "TOTAL",
            "HELD",
            "COMMITTED",
            "HEAD SEQ",
            "HEAD HASH",
            "CHECKPOINTS",
        ],
        &rows,
        json,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exported_line_reads_back_into_the_entry_it_was_written_from() {
        // Proves the export's field names, kinds, amounts and times map back exactly.
        let line = r#"{"sequence":2,"kind":"LEDGER_ENTRY_KIND_RESERVED","poolId":"p","reservationId":"r","beneficiaryUscc":"u","actor":"a","requestId":"q","amount":"1234.56","releasedAmount":"0.00","heldBefore":"0.00","heldAfter":"1234.56","committedBefore":"0.00","committedAfter":"0.00","createTime":"2026-12-06T01:02:03.000004Z","previousHash":"ab","entryHash":"cd","hashVersion":2}"#;
        let (entry, hash) = parse_line(line).unwrap();
        assert_eq!(hash, "cd");
        assert_eq!(entry.kind, "RESERVED");
        assert_eq!(
            (entry.sequence, entry.amount_fen, entry.held_after_fen),
            (2, 123_456, 123_456)
        );
        assert_eq!(entry.created_us % 1_000_000, 4);
        assert_eq!(entry.hash_version, 2);
        assert!(
            parse_line(r#"{"amount": 12.5, "createTime": "2026-12-06T01:02:03Z"}"#)
                .unwrap_err()
                .contains("amount")
        );
    }
}
