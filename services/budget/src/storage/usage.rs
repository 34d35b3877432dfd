//! The `beneficiary_usage` table: what each beneficiary holds and has committed in a pool.

use std::collections::HashMap;

use sqlx::Row;
use subsidy_common::db::DbError;

use super::{Kind, Store, Tx, bind_padding, list, padded_in, padded_insert};
use crate::domain::Usage;

/// The usage of these beneficiaries in a pool (those that have a row).
pub async fn by_beneficiaries(
    tx: &mut Tx,
    pool_id: &str,
    beneficiaries: &[&str],
) -> Result<HashMap<String, Usage>, DbError> {
    if beneficiaries.is_empty() {
        return Ok(HashMap::new());
    }
    let beneficiaries = padded_in(beneficiaries);
    let sql = format!(
        "SELECT beneficiary_uscc, held_fen, committed_fen FROM beneficiary_usage \
         WHERE pool_id = $1 AND beneficiary_uscc IN ({})",
        list(beneficiaries.len(), 2)
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(pool_id);
    for who in beneficiaries {
        query = query.bind(who);
    }
    let mut usages = HashMap::new();
    for row in query.fetch_all(&mut **tx).await? {
        usages.insert(
            row.try_get("beneficiary_uscc")?,
            Usage {
                held_fen: row.try_get("held_fen")?,
                committed_fen: row.try_get("committed_fen")?,
            },
        );
    }
    Ok(usages)
}

/// Writes the usages of a pool as they now are (absolute values: the caller holds the pool's
/// lock, under which they were read). One statement.
pub async fn upsert(tx: &mut Tx, pool_id: &str, usages: &[(String, Usage)]) -> Result<(), DbError> {
    if usages.is_empty() {
        return Ok(());
    }
    const KINDS: [Kind; 4] = [Kind::Text, Kind::Text, Kind::Int, Kind::Int];
    let sql = padded_insert(
        "INSERT INTO beneficiary_usage (pool_id, beneficiary_uscc, held_fen, committed_fen)",
        "*",
        usages.len(),
        &KINDS,
        "ON CONFLICT (pool_id, beneficiary_uscc) DO UPDATE \
         SET held_fen = excluded.held_fen, committed_fen = excluded.committed_fen",
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (who, usage) in usages {
        query = query
            .bind(pool_id.to_owned())
            .bind(who.clone())
            .bind(usage.held_fen)
            .bind(usage.committed_fen);
    }
    bind_padding(query, &KINDS, usages.len())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A beneficiary's usage of a pool with the pool's cap; `None` when the pool is unknown.
pub async fn with_cap(
    store: &Store,
    pool_id: &str,
    uscc: &str,
) -> Result<Option<(Usage, Option<i64>)>, DbError> {
    let row = sqlx::query(
        "SELECT p.beneficiary_cap_fen, COALESCE(u.held_fen, 0) AS held_fen, \
         COALESCE(u.committed_fen, 0) AS committed_fen \
         FROM pools p LEFT JOIN beneficiary_usage u ON u.pool_id = p.pool_id AND u.beneficiary_uscc = $2 \
         WHERE p.pool_id = $1",
    )
    .bind(pool_id)
    .bind(uscc)
    .fetch_optional(&store.db().pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some((
        Usage {
            held_fen: row.try_get("held_fen")?,
            committed_fen: row.try_get("committed_fen")?,
        },
        row.try_get("beneficiary_cap_fen")?,
    )))
}
