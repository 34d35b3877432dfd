//! `subsidyctl ledger verify --file`: an export checked with no service and no database. Each
//! line is one `LedgerEntry` in proto3 JSON as `ledger export` writes it (amounts as decimal
//! strings, see docs/LEDGER.md); the entries are replayed in order by the budget's own pure
//! replay: every hash under its version, every pool's chain, and the balances.

use std::io::BufRead;
use std::path::Path;

use serde_json::Value;
use subsidy_budget::domain::LedgerEntry;
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
    };
    Ok((entry, text("entryHash")?))
}

/// Replays the export at `path`; `Err` names the first problem (line, pool, sequence, what).
pub fn replay(path: &Path) -> Result<Replay, BoxError> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut replay = Replay::default();
    for (index, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let number = index + 1;
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
    }
    Ok(replay)
}

/// `ledger verify --file`: prints each pool's replayed balances and head, or fails naming the
/// first problem.
pub fn verify(ctx: &Ctx, path: &Path) -> Result<(), BoxError> {
    let replay = replay(path)?;
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
