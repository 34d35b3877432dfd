//! What the budget's gauges (`crate::gauges`) read: each pool's amounts and its reservations
//! counted by state, over the pool.

use subsidy_common::db::{Db, DbError};

/// A pool's amounts in fen.
#[derive(Clone, Debug)]
pub struct PoolAmounts {
    /// The pool.
    pub pool_id: String,
    /// Its total.
    pub total_fen: i64,
    /// Held by reservations.
    pub held_fen: i64,
    /// Committed by reservations.
    pub committed_fen: i64,
}

/// The counts behind the budget's gauges.
#[derive(Clone, Debug, Default)]
pub struct Tallies {
    /// Every pool's amounts.
    pub pools: Vec<PoolAmounts>,
    /// Reservations by `[pool_id, state]`.
    pub reservations: Vec<([String; 2], i64)>,
}

/// Reads the amounts and counts behind the gauges from `db`'s pool.
pub async fn tallies(db: Db) -> Result<Tallies, DbError> {
    let pools: Vec<(String, i64, i64, i64)> =
        sqlx::query_as("SELECT pool_id, total_fen, held_fen, committed_fen FROM pools")
            .fetch_all(&db.pool)
            .await?;
    let counts: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT pool_id, state, CAST(COUNT(*) AS BIGINT) FROM reservations GROUP BY pool_id, state",
    )
    .fetch_all(&db.pool)
    .await?;
    Ok(Tallies {
        pools: pools
            .into_iter()
            .map(
                |(pool_id, total_fen, held_fen, committed_fen)| PoolAmounts {
                    pool_id,
                    total_fen,
                    held_fen,
                    committed_fen,
                },
            )
            .collect(),
        reservations: counts
            .into_iter()
            .map(|(pool_id, state, count)| ([pool_id, state], count))
            .collect(),
    })
}
