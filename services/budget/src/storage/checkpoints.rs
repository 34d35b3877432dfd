//! The `ledger_checkpoints` table (append-only: a trigger refuses UPDATE and DELETE) and its
//! outbox, `checkpoint_publications`: a checkpoint without a publication row is published
//! again.

use sqlx::Row;
use sqlx::any::AnyRow;
use subsidy_common::db::DbError;

use super::Tx;
use crate::domain::checkpoint::{Algorithm, Checkpoint, Head};

const COLUMNS: &str = "checkpoint_id, pool_id, sequence, head_hash, total_fen, held_fen, \
     committed_fen, created_us, algorithm, key_id, signature";

/// A stored checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// Order of creation.
    pub checkpoint_id: i64,
    /// The signed checkpoint.
    pub checkpoint: Checkpoint,
}

fn stored(row: &AnyRow) -> Result<StoredCheckpoint, sqlx::Error> {
    let corrupt = |what: String| sqlx::Error::Decode(what.into());
    let algorithm: String = row.try_get("algorithm")?;
    let signature: String = row.try_get("signature")?;
    Ok(StoredCheckpoint {
        checkpoint_id: row.try_get("checkpoint_id")?,
        checkpoint: Checkpoint {
            head: Head {
                pool_id: row.try_get("pool_id")?,
                sequence: row.try_get("sequence")?,
                head_hash: row.try_get("head_hash")?,
                total_fen: row.try_get("total_fen")?,
                held_fen: row.try_get("held_fen")?,
                committed_fen: row.try_get("committed_fen")?,
                created_us: row.try_get("created_us")?,
            },
            algorithm: Algorithm::parse(&algorithm)
                .ok_or_else(|| corrupt(format!("checkpoint algorithm {algorithm:?}")))?,
            key_id: row.try_get("key_id")?,
            signature: hex::decode(&signature)
                .map_err(|_| corrupt("checkpoint signature is not hex".to_owned()))?,
        },
    })
}

/// The head of `pool_id`'s chain now: its last entry's sequence and hash, the counters after
/// it and the pool's total, with the store's time. `None` for an unknown pool. The entry is
/// immutable, so reading it after the pool row cannot mix two instants.
pub async fn head(tx: &mut Tx, pool_id: &str, now_sql: &str) -> Result<Option<Head>, DbError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT p.ledger_sequence, p.ledger_head_hash, p.total_fen, e.entry_hash, \
         e.held_after_fen, e.committed_after_fen, {now_sql} AS now_us \
         FROM pools p JOIN ledger_entries e \
           ON e.pool_id = p.pool_id AND e.sequence = p.ledger_sequence \
         WHERE p.pool_id = $1"
    )))
    .bind(pool_id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let head_hash: String = row.try_get("ledger_head_hash")?;
    let entry_hash: String = row.try_get("entry_hash")?;
    // The writer moves the head and appends the entry in one transaction.
    assert_eq!(
        head_hash, entry_hash,
        "the pool's ledger head is the hash of its last entry"
    );
    Ok(Some(Head {
        pool_id: pool_id.to_owned(),
        sequence: row.try_get("ledger_sequence")?,
        head_hash,
        total_fen: row.try_get("total_fen")?,
        held_fen: row.try_get("held_after_fen")?,
        committed_fen: row.try_get("committed_after_fen")?,
        created_us: row.try_get("now_us")?,
    }))
}

/// The latest checkpoint of `pool_id` signed by `key_id`.
pub async fn latest(
    tx: &mut Tx,
    pool_id: &str,
    key_id: &str,
) -> Result<Option<StoredCheckpoint>, DbError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM ledger_checkpoints WHERE pool_id = $1 AND key_id = $2 \
         ORDER BY checkpoint_id DESC LIMIT 1"
    )))
    .bind(pool_id)
    .bind(key_id)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.as_ref().map(stored).transpose()?)
}

/// Stores `checkpoint` unless its pool, sequence and key are stored already (by a replica at
/// the same moment); returns the one stored.
pub async fn insert(tx: &mut Tx, checkpoint: &Checkpoint) -> Result<StoredCheckpoint, DbError> {
    let head = &checkpoint.head;
    sqlx::query(
        "INSERT INTO ledger_checkpoints (pool_id, sequence, head_hash, total_fen, held_fen, \
         committed_fen, created_us, algorithm, key_id, signature) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (pool_id, sequence, key_id) DO NOTHING",
    )
    .bind(head.pool_id.clone())
    .bind(head.sequence)
    .bind(head.head_hash.clone())
    .bind(head.total_fen)
    .bind(head.held_fen)
    .bind(head.committed_fen)
    .bind(head.created_us)
    .bind(checkpoint.algorithm.as_str())
    .bind(checkpoint.key_id.clone())
    .bind(hex::encode(&checkpoint.signature))
    .execute(&mut **tx)
    .await?;
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM ledger_checkpoints \
         WHERE pool_id = $1 AND sequence = $2 AND key_id = $3"
    )))
    .bind(head.pool_id.clone())
    .bind(head.sequence)
    .bind(checkpoint.key_id.clone())
    .fetch_one(&mut **tx)
    .await?;
    Ok(stored(&row)?)
}

/// Checkpoints after `after_id` in order of creation, optionally of one pool.
pub async fn list_page<'c>(
    db: impl sqlx::Executor<'c, Database = sqlx::Any>,
    pool_id: &str,
    after_id: i64,
    limit: i64,
) -> Result<Vec<StoredCheckpoint>, DbError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM ledger_checkpoints WHERE ($1 = '' OR pool_id = $1) \
         AND checkpoint_id > $2 ORDER BY checkpoint_id LIMIT $3"
    )))
    .bind(pool_id)
    .bind(after_id)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.iter().map(stored).collect::<Result<_, _>>()?)
}

/// Up to `limit` checkpoints not yet published, oldest first.
pub async fn unpublished<'c>(
    db: impl sqlx::Executor<'c, Database = sqlx::Any>,
    limit: i64,
) -> Result<Vec<StoredCheckpoint>, DbError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM ledger_checkpoints c WHERE NOT EXISTS \
         (SELECT 1 FROM checkpoint_publications p WHERE p.checkpoint_id = c.checkpoint_id) \
         ORDER BY checkpoint_id LIMIT $1"
    )))
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.iter().map(stored).collect::<Result<_, _>>()?)
}

/// Records that the notification service accepted the checkpoint's event.
pub async fn mark_published(tx: &mut Tx, checkpoint_id: i64, now_sql: &str) -> Result<(), DbError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO checkpoint_publications (checkpoint_id, published_us) \
         VALUES ($1, {now_sql}) ON CONFLICT (checkpoint_id) DO NOTHING"
    )))
    .bind(checkpoint_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The pools with at least one entry, in id order.
pub async fn pool_ids<'c>(
    db: impl sqlx::Executor<'c, Database = sqlx::Any>,
) -> Result<Vec<String>, DbError> {
    Ok(
        sqlx::query_scalar("SELECT pool_id FROM pools WHERE ledger_sequence > 0 ORDER BY pool_id")
            .fetch_all(db)
            .await?,
    )
}
