//! The `ledger_entries` table: append-only (a trigger refuses UPDATE and DELETE).

use sqlx::Row;
use sqlx::any::AnyRow;
use subsidy_common::db::DbError;

use super::{Kind, Tx, bind_padding, padded_insert};
use crate::domain::LedgerEntry;

const COLUMNS: &str = "pool_id, sequence, kind, reservation_id, beneficiary_uscc, actor, request_id, \
     amount_fen, released_fen, held_before_fen, held_after_fen, committed_before_fen, committed_after_fen, \
     created_us, previous_hash, entry_hash, hash_version, expires_us";
/// The kinds of the columns, in order.
const KINDS: [Kind; 18] = [
    Kind::Text,
    Kind::Int,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Int,
    Kind::Int,
    Kind::Int,
    Kind::Int,
    Kind::Int,
    Kind::Int,
    Kind::Int,
    Kind::Text,
    Kind::Text,
    Kind::Int,
    Kind::Int,
];

/// A stored ledger entry with its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEntry {
    /// Global write order.
    pub entry_id: i64,
    /// The hashed content.
    pub entry: LedgerEntry,
    /// The stored hash.
    pub entry_hash: String,
}

fn stored(row: &AnyRow) -> Result<StoredEntry, sqlx::Error> {
    Ok(StoredEntry {
        entry_id: row.try_get("entry_id")?,
        entry_hash: row.try_get("entry_hash")?,
        entry: LedgerEntry {
            pool_id: row.try_get("pool_id")?,
            sequence: row.try_get("sequence")?,
            kind: row.try_get("kind")?,
            reservation_id: row.try_get("reservation_id")?,
            beneficiary_uscc: row.try_get("beneficiary_uscc")?,
            actor: row.try_get("actor")?,
            request_id: row.try_get("request_id")?,
            amount_fen: row.try_get("amount_fen")?,
            released_fen: row.try_get("released_fen")?,
            held_before_fen: row.try_get("held_before_fen")?,
            held_after_fen: row.try_get("held_after_fen")?,
            committed_before_fen: row.try_get("committed_before_fen")?,
            committed_after_fen: row.try_get("committed_after_fen")?,
            created_us: row.try_get("created_us")?,
            previous_hash: row.try_get("previous_hash")?,
            hash_version: row.try_get("hash_version")?,
            expires_us: row.try_get("expires_us")?,
        },
    })
}

/// Appends entries (already chained) in order. One statement.
pub async fn append(tx: &mut Tx, entries: &[(LedgerEntry, String)]) -> Result<(), DbError> {
    if entries.is_empty() {
        return Ok(());
    }
    let sql = padded_insert(
        &format!("INSERT INTO ledger_entries ({COLUMNS})"),
        "*",
        entries.len(),
        &KINDS,
        "",
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (entry, hash) in entries {
        query = query
            .bind(entry.pool_id.clone())
            .bind(entry.sequence)
            .bind(entry.kind.clone())
            .bind(entry.reservation_id.clone())
            .bind(entry.beneficiary_uscc.clone())
            .bind(entry.actor.clone())
            .bind(entry.request_id.clone())
            .bind(entry.amount_fen)
            .bind(entry.released_fen)
            .bind(entry.held_before_fen)
            .bind(entry.held_after_fen)
            .bind(entry.committed_before_fen)
            .bind(entry.committed_after_fen)
            .bind(entry.created_us)
            .bind(entry.previous_hash.clone())
            .bind(hash.clone())
            .bind(entry.hash_version)
            .bind(entry.expires_us);
    }
    bind_padding(query, &KINDS, entries.len())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The entries of one reservation after `after_entry_id` in write order, only in `pool_id`
/// when that is not empty. A query of its own (not an `OR` on an empty parameter), so that
/// PostgreSQL plans it on `ledger_entries_by_reservation` whatever the parameters.
pub async fn reservation_page<'c>(
    db: impl sqlx::Executor<'c, Database = sqlx::Any>,
    (pool_id, reservation_id): (&str, &str),
    after_entry_id: i64,
    limit: i64,
) -> Result<Vec<StoredEntry>, DbError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT entry_id, {COLUMNS} FROM ledger_entries \
         WHERE reservation_id = $1 AND ($2 = '' OR pool_id = $2) AND entry_id > $3 \
         ORDER BY entry_id LIMIT $4"
    )))
    .bind(reservation_id)
    .bind(pool_id)
    .bind(after_entry_id)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.iter().map(stored).collect::<Result<_, _>>()?)
}

/// Ledger entries after `after_entry_id` in write order, optionally of one pool.
pub async fn list_page<'c>(
    db: impl sqlx::Executor<'c, Database = sqlx::Any>,
    pool_id: &str,
    after_entry_id: i64,
    limit: i64,
) -> Result<Vec<StoredEntry>, DbError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT entry_id, {COLUMNS} FROM ledger_entries WHERE ($1 = '' OR pool_id = $1) AND entry_id > $2 \
         ORDER BY entry_id LIMIT $3"
    )))
    .bind(pool_id)
    .bind(after_entry_id)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.iter().map(stored).collect::<Result<_, _>>()?)
}
