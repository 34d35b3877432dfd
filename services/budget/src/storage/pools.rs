//! The `pools` table: configuration, counters and the head of each pool's ledger chain.

use sqlx::Row;
use sqlx::any::AnyRow;
use subsidy_common::Money;
use subsidy_common::db::DbError;

use super::{Store, Tx};
use crate::domain::{NewPool, Pool};

const POOL_COLUMNS: &str = "pool_id, display_name, total_fen, held_fen, committed_fen, beneficiary_cap_fen, \
     reservation_cap_fen, default_hold_seconds, reservation_count, created_us, closed_us, close_reason";

fn pool(row: &AnyRow) -> Result<Pool, sqlx::Error> {
    Ok(Pool {
        pool_id: row.try_get("pool_id")?,
        display_name: row.try_get("display_name")?,
        total_fen: row.try_get("total_fen")?,
        held_fen: row.try_get("held_fen")?,
        committed_fen: row.try_get("committed_fen")?,
        beneficiary_cap_fen: row.try_get("beneficiary_cap_fen")?,
        reservation_cap_fen: row.try_get("reservation_cap_fen")?,
        default_hold_seconds: row.try_get("default_hold_seconds")?,
        reservation_count: row.try_get("reservation_count")?,
        created_us: row.try_get("created_us")?,
        closed_us: row.try_get("closed_us")?,
        close_reason: row.try_get("close_reason")?,
    })
}

/// A pool as read under its lock, with its ledger head and the store's time.
#[derive(Clone, Debug)]
pub struct Locked {
    /// The pool.
    pub pool: Pool,
    /// The sequence of its last ledger entry.
    pub ledger_sequence: i64,
    /// The hash of its last ledger entry.
    pub ledger_head: String,
    /// The store's time, µs.
    pub now_us: i64,
}

/// Reads the pool and locks its row until the transaction ends (`FOR UPDATE` on PostgreSQL;
/// on SQLite the write transaction holds the database's write lock already).
pub async fn lock(store: &Store, tx: &mut Tx, pool_id: &str) -> Result<Option<Locked>, DbError> {
    let lock = if store.locks_rows() {
        " FOR UPDATE"
    } else {
        ""
    };
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {POOL_COLUMNS}, ledger_sequence, ledger_head_hash, {} AS now_us FROM pools \
         WHERE pool_id = $1{lock}",
        store.now_sql()
    )))
    .bind(pool_id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(Locked {
        pool: pool(&row)?,
        ledger_sequence: row.try_get("ledger_sequence")?,
        ledger_head: row.try_get("ledger_head_hash")?,
        now_us: row.try_get("now_us")?,
    }))
}

/// Writes a locked pool's new counters and ledger head.
pub async fn update(
    tx: &mut Tx,
    pool: &Pool,
    ledger_sequence: i64,
    ledger_head: &str,
) -> Result<(), DbError> {
    let updated = sqlx::query(
        "UPDATE pools SET held_fen = $2, committed_fen = $3, reservation_count = $4, \
         ledger_sequence = $5, ledger_head_hash = $6, closed_us = $7, close_reason = $8 \
         WHERE pool_id = $1",
    )
    .bind(&pool.pool_id)
    .bind(pool.held_fen)
    .bind(pool.committed_fen)
    .bind(pool.reservation_count)
    .bind(ledger_sequence)
    .bind(ledger_head)
    .bind(pool.closed_us)
    .bind(pool.close_reason.clone())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    assert_eq!(updated, 1, "a locked pool exists");
    Ok(())
}

/// Inserts a new pool whose ledger head is its first entry; `None` when the id is taken.
pub async fn insert(
    store: &Store,
    tx: &mut Tx,
    new: &NewPool,
    first_entry_hash: impl FnOnce(&Pool) -> String,
) -> Result<Option<Pool>, DbError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO pools ({POOL_COLUMNS}, ledger_sequence, ledger_head_hash) \
         VALUES ($1, $2, $3, 0, 0, $4, $5, $6, 0, {}, NULL, NULL, 1, '') \
         ON CONFLICT (pool_id) DO NOTHING RETURNING {POOL_COLUMNS}",
        store.now_sql()
    )))
    .bind(new.pool_id.as_str())
    .bind(&new.display_name)
    .bind(new.total.fen())
    .bind(new.beneficiary_cap.map(Money::fen))
    .bind(new.reservation_cap.map(Money::fen))
    .bind(new.default_hold_seconds)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let created = pool(&row)?;
    sqlx::query("UPDATE pools SET ledger_head_hash = $2 WHERE pool_id = $1")
        .bind(&created.pool_id)
        .bind(first_entry_hash(&created))
        .execute(&mut **tx)
        .await?;
    Ok(Some(created))
}

/// Whether a pool exists.
pub async fn exists(store: &Store, pool_id: &str) -> Result<bool, DbError> {
    let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM pools WHERE pool_id = $1")
        .bind(pool_id)
        .fetch_optional(&store.db().pool)
        .await?;
    Ok(found.is_some())
}

/// One pool, read in a single statement (a consistent snapshot of its counters).
pub async fn get(store: &Store, pool_id: &str) -> Result<Option<Pool>, DbError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {POOL_COLUMNS} FROM pools WHERE pool_id = $1"
    )))
    .bind(pool_id)
    .fetch_optional(&store.db().pool)
    .await?;
    let found = row.as_ref().map(pool).transpose()?;
    if let Some(found) = &found {
        found.assert_invariants();
    }
    Ok(found)
}

/// Pools after `after` in id order.
pub async fn list<'c>(
    db: impl sqlx::Executor<'c, Database = sqlx::Any>,
    after: &str,
    limit: i64,
) -> Result<Vec<Pool>, DbError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {POOL_COLUMNS} FROM pools WHERE pool_id > $1 ORDER BY pool_id LIMIT $2"
    )))
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.iter().map(pool).collect::<Result<_, _>>()?)
}

/// The stored ledger head of a pool: `(sequence, hash)`.
pub async fn ledger_head<'c>(
    db: impl sqlx::Executor<'c, Database = sqlx::Any>,
    pool_id: &str,
) -> Result<(i64, String), DbError> {
    Ok(
        sqlx::query_as("SELECT ledger_sequence, ledger_head_hash FROM pools WHERE pool_id = $1")
            .bind(pool_id)
            .fetch_one(db)
            .await?,
    )
}
