//! Program statistics (`GetProgramStatistics`): read-only. The application's own figures are
//! read in one snapshot (so counts, sums and the multiplier agree with each other however many
//! writers commit meanwhile), then each pool's amounts are asked of the budget service. Every
//! figure is defined on `GetProgramStatisticsResponse`; the arithmetic is in
//! `domain::statistics`.

use chrono::NaiveDate;
use prost::Message;
use subsidy_common::time::shanghai_date_of_us;
use subsidy_proto::application as pb;

use super::Workflow;
use crate::domain::statistics::{
    FundedContract, Multiplier, MultiplierTally, POOLS_MAX, Period, Program, burn_rate_fen,
    exhaustion_date, median_offset,
};
use crate::error::ApplicationError;
use crate::storage::Conn;
use crate::storage::statistics::{Amounts, FundedClaimRow, Window};
use crate::upstream::money;

/// One pool's figures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolFigures {
    /// The pool.
    pub pool_id: String,
    /// Its total, fen (from the budget service).
    pub total_fen: i64,
    /// Held, fen (from the budget service).
    pub held_fen: i64,
    /// Committed, fen (from the budget service).
    pub committed_fen: i64,
    /// Available, fen (from the budget service).
    pub available_fen: i64,
    /// Committed for the period's applications, fen.
    pub period_committed_fen: i64,
    /// Days the burn rate is spread over.
    pub day_count: i64,
    /// Committed per day, fen, rounded down.
    pub burn_rate_fen: i64,
    /// When the available amount runs out at the burn rate.
    pub exhaustion_date: Option<NaiveDate>,
}

/// A program's statistics over a period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramStatistics {
    /// The program.
    pub program: Program,
    /// The period.
    pub period: Period,
    /// The day the statistics were computed (Asia/Shanghai, by the database clock).
    pub as_of: NaiveDate,
    /// Applications by stored state name (states without any are left out).
    pub states: Vec<(String, i64)>,
    /// The amounts.
    pub amounts: Amounts,
    /// The pools, in order of pool id.
    pub pools: Vec<PoolFigures>,
    /// The multiplier (compute vouchers only).
    pub multiplier: Option<Multiplier>,
    /// Applications decided.
    pub decided_count: i64,
    /// The median time from submission to decision, µs.
    pub decision_time_median_us: Option<i64>,
}

/// What the snapshot yields before the budget is asked.
struct Recorded {
    as_of: NaiveDate,
    states: Vec<(String, i64)>,
    amounts: Amounts,
    pools: Vec<(String, i64)>,
    multiplier: Option<Multiplier>,
    decided_count: i64,
    decision_time_median_us: Option<i64>,
}

impl Workflow {
    /// The statistics of `program` over `period`.
    pub async fn program_statistics(
        &self,
        program: Program,
        period: Period,
    ) -> Result<ProgramStatistics, ApplicationError> {
        let recorded = self.recorded_statistics(program, period).await?;
        let day_count = period.days_elapsed(recorded.as_of);
        let mut pools = Vec::with_capacity(recorded.pools.len());
        for (pool_id, period_committed_fen) in recorded.pools {
            pools.push(
                self.pool_figures(pool_id, period_committed_fen, day_count, recorded.as_of)
                    .await?,
            );
        }
        Ok(ProgramStatistics {
            program,
            period,
            as_of: recorded.as_of,
            states: recorded.states,
            amounts: recorded.amounts,
            pools,
            multiplier: recorded.multiplier,
            decided_count: recorded.decided_count,
            decision_time_median_us: recorded.decision_time_median_us,
        })
    }

    /// The figures of the application's own records, read in one snapshot.
    async fn recorded_statistics(
        &self,
        program: Program,
        period: Period,
    ) -> Result<Recorded, ApplicationError> {
        let store = &self.store;
        let window = period.window_us();
        let mut tx = store.db().begin_snapshot().await?;
        let conn: &mut Conn = &mut tx;
        let as_of = shanghai_date_of_us(store.now_us(conn).await?);
        let states = store.statistics_states(conn, program, window).await?;
        let amounts = store.statistics_amounts(conn, program, window).await?;
        let pools = store
            .statistics_pools(conn, program, window, POOLS_MAX)
            .await?;
        let decided_count = store.statistics_decided(conn, program, window).await?;
        let decision_time_median_us = match median_offset(decided_count) {
            Some(offset) => {
                store
                    .statistics_decision_time_at(conn, program, window, offset)
                    .await?
            }
            None => None,
        };
        let multiplier = match program {
            Program::ComputeVoucher => Some(self.multiplier(conn, window).await?),
            Program::DataInfrastructure => None,
        };
        // Read-only: ending the snapshot changes nothing.
        tx.rollback()
            .await
            .map_err(subsidy_common::db::DbError::from)?;
        Ok(Recorded {
            as_of,
            states,
            amounts,
            pools,
            multiplier,
            decided_count,
            decision_time_median_us,
        })
    }

    /// The multiplier of the claims of `window` now funded, their contracts decoded one by one.
    async fn multiplier(
        &self,
        conn: &mut Conn,
        window: Window,
    ) -> Result<Multiplier, ApplicationError> {
        let mut tally = MultiplierTally::default();
        self.store
            .statistics_funded_claims(conn, window, |row: FundedClaimRow| {
                let contract = pb::ComputeContract::decode(row.contract.as_slice())
                    .expect("a stored contract is a valid ComputeContract");
                tally.add(&FundedContract {
                    buyer_uscc: row.enterprise_uscc,
                    seller_uscc: contract.seller_uscc,
                    seller_name: contract.seller_name,
                    data_center_division_code: contract.data_center_division_code,
                    contract_total_fen: row.contract_total_fen,
                    approved_fen: row.approved_fen,
                });
                Ok::<(), ApplicationError>(())
            })
            .await?;
        Ok(tally.finish())
    }

    /// A pool's amounts from the budget service with the period's burn rate.
    async fn pool_figures(
        &self,
        pool_id: String,
        period_committed_fen: i64,
        day_count: i64,
        as_of: NaiveDate,
    ) -> Result<PoolFigures, ApplicationError> {
        let pool = self.peers.pool(&pool_id).await?;
        let total = money("budget", &pool.total)?;
        let held = money("budget", &pool.held)?;
        let committed = money("budget", &pool.committed)?;
        let available = money("budget", &pool.available)?;
        if held.fen() + committed.fen() > total.fen() {
            // The budget's invariant (held + committed <= total) broken: its bug, not ours to
            // project from.
            return Err(ApplicationError::UpstreamUnexpected {
                service: "budget",
                code: "Ok".into(),
                reason: "POOL_AMOUNTS_INCONSISTENT".into(),
            });
        }
        let burn_rate = burn_rate_fen(period_committed_fen, day_count);
        Ok(PoolFigures {
            total_fen: total.fen(),
            held_fen: held.fen(),
            committed_fen: committed.fen(),
            available_fen: available.fen(),
            period_committed_fen,
            day_count,
            burn_rate_fen: burn_rate,
            exhaustion_date: exhaustion_date(as_of, available.fen(), burn_rate),
            pool_id,
        })
    }
}
