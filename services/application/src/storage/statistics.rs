//! What program statistics read: counts and sums over the claims or proposals submitted in a
//! window of instants, the committed amounts by pool, the median time to decision (found by
//! the database's sort, one row read), and the funded claims one by one for the multiplier.
//! Every amount is summed in integer fen by the database; the contract blobs are handed to the
//! caller undecoded. The windows use the tables' submission indexes (`claims_by_submission`,
//! `proposals_by_submission`), so no index of its own is needed.

use futures::TryStreamExt;
use sqlx::{AnyConnection, Row};
use subsidy_common::db::DbError;

use super::Store;
use crate::domain::statistics::Program;

/// A window of submission instants, microseconds since the epoch: `[start, end)`.
pub type Window = (i64, i64);

/// The window that takes every application (what the gauges read).
pub const ALL_TIME: Window = (i64::MIN, i64::MAX);

/// Amounts of the applications of a window, fen (see `GetProgramStatisticsResponse`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Amounts {
    /// Requested: claims' entitlements, proposals' requested amounts.
    pub requested_fen: i64,
    /// Approved (APPROVED or DISBURSED claims) or awarded (AWARDED or DISBURSED proposals).
    pub approved_fen: i64,
    /// Disbursed.
    pub disbursed_fen: i64,
    /// Contract totals of the funded claims (0 for proposals).
    pub funded_contract_volume_fen: i64,
}

/// A funded claim as stored, for the multiplier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FundedClaimRow {
    /// The buyer.
    pub enterprise_uscc: String,
    /// The contract total, fen.
    pub contract_total_fen: i64,
    /// The approved amount, fen.
    pub approved_fen: i64,
    /// The contract as submitted (encoded `ComputeContract`).
    pub contract: Vec<u8>,
}

/// The table, the states funded and decided, and the SQL of each program's figures.
struct Sql {
    table: &'static str,
    /// Its rows with their pool (`p`) and, for proposals, the round (`r`).
    rows: &'static str,
    pool: &'static str,
    funded: &'static str,
    decided: &'static str,
    /// The instant of the decision.
    decided_us: &'static str,
    requested: &'static str,
}

fn sql(program: Program) -> Sql {
    match program {
        Program::ComputeVoucher => Sql {
            table: "claims",
            rows: "claims AS p",
            pool: "p.pool_id",
            funded: "('APPROVED', 'DISBURSED')",
            decided: "('APPROVED', 'REJECTED', 'DISBURSED')",
            decided_us: "p.reviewed_us",
            // Zero unless the latest evaluation found the claim eligible.
            requested: "p.entitlement_fen",
        },
        Program::DataInfrastructure => Sql {
            table: "proposals",
            rows: "proposals AS p JOIN selection_rounds AS r ON r.round_id = p.round_id",
            pool: "r.pool_id",
            funded: "('AWARDED', 'DISBURSED')",
            decided: "('AWARDED', 'NOT_SELECTED', 'DISBURSED')",
            decided_us: "r.finalized_us",
            requested: "p.requested_fen",
        },
    }
}

/// The amount approved of a row: the claim's approved or the proposal's awarded amount.
fn approved_column(program: Program) -> &'static str {
    match program {
        Program::ComputeVoucher => "p.approved_fen",
        Program::DataInfrastructure => "p.awarded_fen",
    }
}

const IN_WINDOW: &str = "p.submit_us >= $1 AND p.submit_us < $2";

impl Store {
    /// The program's applications of `window` by state (states without any are left out).
    pub async fn statistics_states(
        &self,
        conn: &mut AnyConnection,
        program: Program,
        window: Window,
    ) -> Result<Vec<(String, i64)>, DbError> {
        let sql = sql(program);
        let query = format!(
            "SELECT p.state, CAST(COUNT(*) AS BIGINT) FROM {} AS p WHERE {IN_WINDOW} GROUP BY p.state",
            sql.table
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(query))
            .bind(window.0)
            .bind(window.1)
            .fetch_all(conn)
            .await?)
    }

    /// The amounts of the program's applications of `window`.
    pub async fn statistics_amounts(
        &self,
        conn: &mut AnyConnection,
        program: Program,
        window: Window,
    ) -> Result<Amounts, DbError> {
        let sql = sql(program);
        let approved = approved_column(program);
        let volume = match program {
            Program::ComputeVoucher => "p.contract_total_fen",
            Program::DataInfrastructure => "0",
        };
        let query = format!(
            "SELECT CAST(COALESCE(SUM({requested}), 0) AS BIGINT), \
                    CAST(COALESCE(SUM(CASE WHEN p.state IN {funded} THEN {approved} ELSE 0 END), 0) AS BIGINT), \
                    CAST(COALESCE(SUM(CASE WHEN p.state = 'DISBURSED' THEN p.disbursed_fen ELSE 0 END), 0) AS BIGINT), \
                    CAST(COALESCE(SUM(CASE WHEN p.state IN {funded} THEN {volume} ELSE 0 END), 0) AS BIGINT) \
             FROM {table} AS p WHERE {IN_WINDOW}",
            requested = sql.requested,
            funded = sql.funded,
            table = sql.table,
        );
        let (requested_fen, approved_fen, disbursed_fen, funded_contract_volume_fen) =
            sqlx::query_as(sqlx::AssertSqlSafe(query))
                .bind(window.0)
                .bind(window.1)
                .fetch_one(conn)
                .await?;
        Ok(Amounts {
            requested_fen,
            approved_fen,
            disbursed_fen,
            funded_contract_volume_fen,
        })
    }

    /// The pools funding the program's applications of `window`, in order of pool id (at most
    /// `limit`), each with the amount committed for those applications, fen.
    pub async fn statistics_pools(
        &self,
        conn: &mut AnyConnection,
        program: Program,
        window: Window,
        limit: i64,
    ) -> Result<Vec<(String, i64)>, DbError> {
        let sql = sql(program);
        let query = format!(
            "SELECT {pool}, CAST(COALESCE(SUM(CASE WHEN p.state IN {funded} THEN {approved} ELSE 0 END), 0) AS BIGINT) \
             FROM {rows} WHERE {IN_WINDOW} GROUP BY {pool} ORDER BY {pool} LIMIT $3",
            pool = sql.pool,
            funded = sql.funded,
            approved = approved_column(program),
            rows = sql.rows,
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(query))
            .bind(window.0)
            .bind(window.1)
            .bind(limit)
            .fetch_all(conn)
            .await?)
    }

    /// How many of the program's applications of `window` are decided (see
    /// `GetProgramStatisticsResponse.decided_count`).
    pub async fn statistics_decided(
        &self,
        conn: &mut AnyConnection,
        program: Program,
        window: Window,
    ) -> Result<i64, DbError> {
        let sql = sql(program);
        let query = format!(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM {rows} \
             WHERE {IN_WINDOW} AND p.state IN {decided} AND {decided_us} IS NOT NULL",
            rows = sql.rows,
            decided = sql.decided,
            decided_us = sql.decided_us,
        );
        Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(query))
            .bind(window.0)
            .bind(window.1)
            .fetch_one(conn)
            .await?)
    }

    /// The time from submission to decision at `offset` (counting from 0) of the decided
    /// applications of `window` sorted by it, µs; `None` when there are not that many.
    pub async fn statistics_decision_time_at(
        &self,
        conn: &mut AnyConnection,
        program: Program,
        window: Window,
        offset: i64,
    ) -> Result<Option<i64>, DbError> {
        let sql = sql(program);
        let query = format!(
            "SELECT {decided_us} - p.submit_us AS decision_us FROM {rows} \
             WHERE {IN_WINDOW} AND p.state IN {decided} AND {decided_us} IS NOT NULL \
             ORDER BY decision_us LIMIT 1 OFFSET $3",
            rows = sql.rows,
            decided = sql.decided,
            decided_us = sql.decided_us,
        );
        Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(query))
            .bind(window.0)
            .bind(window.1)
            .bind(offset)
            .fetch_optional(conn)
            .await?)
    }

    /// Hands each claim of `window` now APPROVED or DISBURSED to `each`, in submission order,
    /// one row at a time (however many there are, only one is held).
    pub async fn statistics_funded_claims<E: From<DbError>>(
        &self,
        conn: &mut AnyConnection,
        window: Window,
        mut each: impl FnMut(FundedClaimRow) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut rows = sqlx::query(
            "SELECT p.enterprise_uscc, p.contract_total_fen, p.approved_fen, p.contract \
             FROM claims AS p \
             WHERE p.submit_us >= $1 AND p.submit_us < $2 AND p.state IN ('APPROVED', 'DISBURSED') \
             ORDER BY p.submit_us, p.claim_id",
        )
        .bind(window.0)
        .bind(window.1)
        .fetch(conn);
        while let Some(row) = rows.try_next().await.map_err(DbError::from)? {
            let claim = FundedClaimRow {
                enterprise_uscc: row.try_get("enterprise_uscc").map_err(DbError::from)?,
                contract_total_fen: row.try_get("contract_total_fen").map_err(DbError::from)?,
                approved_fen: row.try_get("approved_fen").map_err(DbError::from)?,
                contract: row.try_get("contract").map_err(DbError::from)?,
            };
            each(claim)?;
        }
        Ok(())
    }
}
