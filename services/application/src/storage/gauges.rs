//! What the application's gauges (`crate::gauges`) read, in a few grouped counts and sums over
//! the pool (the program amounts through the statistics' own queries, over all time).

use subsidy_common::db::{Db, DbError};

use super::statistics::{ALL_TIME, Amounts};
use crate::domain::statistics::{Program, median_offset};

/// The counts behind the application's gauges.
#[derive(Clone, Debug, Default)]
pub struct Tallies {
    /// Claims by state.
    pub claims: Vec<(String, i64)>,
    /// Proposals by state.
    pub proposals: Vec<(String, i64)>,
    /// Waitlisted claims by pool.
    pub waitlists: Vec<(String, i64)>,
    /// Outbox events not yet handed on (dead-lettered ones excluded).
    pub outbox_pending: i64,
    /// When the oldest of them was written, microseconds since the epoch (`None` when none
    /// waits).
    pub outbox_oldest_us: Option<i64>,
    /// Outbox events the relay gave up on.
    pub outbox_dead: i64,
    /// Each program's amounts over all its applications, as `GetProgramStatistics` defines
    /// them, with the median time from submission to decision (µs; `None` when nothing is
    /// decided yet).
    pub programs: Vec<(Program, Amounts, Option<i64>)>,
}

/// Reads the counts behind the gauges from `db`'s pool.
pub async fn tallies(db: Db) -> Result<Tallies, DbError> {
    let claims: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, CAST(COUNT(*) AS BIGINT) FROM claims GROUP BY state")
            .fetch_all(&db.pool)
            .await?;
    let proposals: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, CAST(COUNT(*) AS BIGINT) FROM proposals GROUP BY state")
            .fetch_all(&db.pool)
            .await?;
    let waitlists: Vec<(String, i64)> = sqlx::query_as(
        "SELECT pool_id, CAST(COUNT(*) AS BIGINT) FROM claims WHERE state = 'WAITLISTED' GROUP BY pool_id",
    )
    .fetch_all(&db.pool)
    .await?;
    let (outbox_pending, outbox_oldest_us, outbox_dead): (i64, Option<i64>, i64) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(CASE WHEN dead_lettered = 0 THEN 1 ELSE 0 END), 0) AS BIGINT), \
                MIN(CASE WHEN dead_lettered = 0 THEN created_us END), \
                CAST(COALESCE(SUM(dead_lettered), 0) AS BIGINT) \
         FROM outbox WHERE delivered_us IS NULL",
    )
    .fetch_one(&db.pool)
    .await?;
    let store = super::Store::new(db.clone());
    let mut conn = db.pool.acquire().await?;
    let mut programs = Vec::new();
    for program in [Program::ComputeVoucher, Program::DataInfrastructure] {
        let amounts = store
            .statistics_amounts(&mut conn, program, ALL_TIME)
            .await?;
        let decided = store
            .statistics_decided(&mut conn, program, ALL_TIME)
            .await?;
        let median_us = match median_offset(decided) {
            Some(offset) => {
                store
                    .statistics_decision_time_at(&mut conn, program, ALL_TIME, offset)
                    .await?
            }
            None => None,
        };
        programs.push((program, amounts, median_us));
    }
    Ok(Tallies {
        claims,
        proposals,
        waitlists,
        outbox_pending,
        outbox_oldest_us,
        outbox_dead,
        programs,
    })
}
