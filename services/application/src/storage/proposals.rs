//! The `proposals` table: data-infrastructure proposals with their screening, their place in
//! the round's ranking, their award and payment.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use subsidy_common::db::{DbError, restricted_to};

use super::{AnyQuery, Payment, Store, Table, Tx, bind_payment, decode_error, payment_of};
use crate::domain::{ProposalCategory, ProposalFilter, ProposalState};

/// A data-infrastructure proposal as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProposalRow {
    /// Identifier, `proposal-<uuid>`.
    pub proposal_id: String,
    /// Round.
    pub round_id: String,
    /// State.
    pub state: ProposalState,
    /// Applicant.
    pub applicant_uscc: String,
    /// Category.
    pub category: ProposalCategory,
    /// Title.
    pub title: String,
    /// Requested, fen.
    pub requested_fen: i64,
    /// Summary.
    pub summary: String,
    /// Attachment digests (length-delimited `AttachmentDigest` messages).
    pub attachments: Vec<u8>,
    /// The screening decision (encoded `DecisionSummary`).
    pub decision: Option<Vec<u8>>,
    /// Rank in the round's ranking, 0 when not ranked.
    pub rank: i64,
    /// The award the ranking gives, fen (0 when none).
    pub planned_award_fen: i64,
    /// The award's reservation.
    pub reservation_id: Option<String>,
    /// Awarded and committed, fen.
    pub awarded_fen: i64,
    /// Withdrawal reason.
    pub withdrawal_reason: String,
    /// The payment, once recorded.
    pub payment: Option<Payment>,
    /// When the current step began, µs.
    pub step_us: i64,
    /// Submitted, µs.
    pub submit_us: i64,
    /// Last changed, µs.
    pub updated_us: i64,
    /// Number of history entries.
    pub revision: i64,
}

const PROPOSAL_COLUMNS: &str = "proposal_id, round_id, state, applicant_uscc, category, title, requested_fen, \
     summary, attachments, decision, rank, planned_award_fen, reservation_id, awarded_fen, withdrawal_reason, \
     payment_reference, payment_date, disbursed_fen, disbursed_by, disbursed_us, step_us, submit_us, \
     updated_us, revision";

fn proposal_row(row: &AnyRow) -> Result<ProposalRow, DbError> {
    let state: String = row.try_get("state")?;
    let category: String = row.try_get("category")?;
    Ok(ProposalRow {
        proposal_id: row.try_get("proposal_id")?,
        round_id: row.try_get("round_id")?,
        state: ProposalState::parse(&state)
            .ok_or_else(|| decode_error("proposal state", &state))?,
        applicant_uscc: row.try_get("applicant_uscc")?,
        category: ProposalCategory::parse(&category)
            .ok_or_else(|| decode_error("category", &category))?,
        title: row.try_get("title")?,
        requested_fen: row.try_get("requested_fen")?,
        summary: row.try_get("summary")?,
        attachments: row.try_get("attachments")?,
        decision: row.try_get("decision")?,
        rank: row.try_get("rank")?,
        planned_award_fen: row.try_get("planned_award_fen")?,
        reservation_id: row.try_get("reservation_id")?,
        awarded_fen: row.try_get("awarded_fen")?,
        withdrawal_reason: row.try_get("withdrawal_reason")?,
        payment: payment_of(row)?,
        step_us: row.try_get("step_us")?,
        submit_us: row.try_get("submit_us")?,
        updated_us: row.try_get("updated_us")?,
        revision: row.try_get("revision")?,
    })
}

/// Binds every column of [`PROPOSAL_COLUMNS`], in order.
fn bind_proposal<'q>(query: AnyQuery<'q>, p: &ProposalRow) -> AnyQuery<'q> {
    let query = query
        .bind(p.proposal_id.clone())
        .bind(p.round_id.clone())
        .bind(p.state.as_str())
        .bind(p.applicant_uscc.clone())
        .bind(p.category.as_str())
        .bind(p.title.clone())
        .bind(p.requested_fen)
        .bind(p.summary.clone())
        .bind(p.attachments.clone())
        .bind(p.decision.clone())
        .bind(p.rank)
        .bind(p.planned_award_fen)
        .bind(p.reservation_id.clone())
        .bind(p.awarded_fen)
        .bind(p.withdrawal_reason.clone());
    bind_payment(query, &p.payment)
        .bind(p.step_us)
        .bind(p.submit_us)
        .bind(p.updated_us)
        .bind(p.revision)
}

const PROPOSALS: Table<ProposalRow> = Table {
    name: "proposals",
    columns: PROPOSAL_COLUMNS,
    decode: proposal_row,
    bind: bind_proposal,
};

impl Store {
    /// Inserts a proposal.
    pub async fn insert_proposal(
        &self,
        tx: &mut Tx,
        proposal: &ProposalRow,
    ) -> Result<(), DbError> {
        self.insert_row(tx, &PROPOSALS, proposal, "").await?;
        Ok(())
    }

    /// One proposal, read.
    pub async fn get_proposal(
        &self,
        conn: &mut AnyConnection,
        proposal_id: &str,
    ) -> Result<Option<ProposalRow>, DbError> {
        self.fetch_row(conn, &PROPOSALS, proposal_id, false).await
    }

    /// One proposal, locked for change in `tx`.
    pub async fn lock_proposal(
        &self,
        tx: &mut Tx,
        proposal_id: &str,
    ) -> Result<Option<ProposalRow>, DbError> {
        self.fetch_row(tx, &PROPOSALS, proposal_id, true).await
    }

    /// Writes back a proposal locked in `tx`.
    pub async fn save_proposal(&self, tx: &mut Tx, proposal: &ProposalRow) -> Result<(), DbError> {
        self.save_row(tx, &PROPOSALS, proposal).await
    }

    /// The proposals of a round in submission order, locked when `lock` (in a write
    /// transaction of the round's finalisation).
    pub async fn round_proposals(
        &self,
        conn: &mut AnyConnection,
        round_id: &str,
        lock: bool,
    ) -> Result<Vec<ProposalRow>, DbError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PROPOSAL_COLUMNS} FROM proposals WHERE round_id = $1 ORDER BY submit_us, proposal_id{}",
            self.lock_clause(lock)
        )))
        .bind(round_id)
        .fetch_all(conn)
        .await?;
        rows.iter().map(proposal_row).collect()
    }

    /// The number of proposals submitted into a round.
    pub async fn proposal_count(
        &self,
        conn: &mut AnyConnection,
        round_id: &str,
    ) -> Result<i64, DbError> {
        Ok(
            sqlx::query_scalar(
                "SELECT CAST(COUNT(*) AS BIGINT) FROM proposals WHERE round_id = $1",
            )
            .bind(round_id)
            .fetch_one(conn)
            .await?,
        )
    }

    /// Proposals, newest submission first, after `(submit_us, proposal_id)`.
    pub async fn list_proposals(
        &self,
        conn: &mut AnyConnection,
        filter: &ProposalFilter,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<ProposalRow>, DbError> {
        let has_after = i64::from(after.is_some());
        let (after_us, after_id) = after.unwrap_or((0, String::new()));
        let tenants = restricted_to("applicant_uscc", filter.tenants.as_deref(), 8);
        let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PROPOSAL_COLUMNS} FROM proposals WHERE ($1 = '' OR round_id = $1) \
             AND ($2 = '' OR state = $2) AND ($3 = '' OR applicant_uscc = $3) \
             AND ($4 = 0 OR submit_us < $5 OR (submit_us = $5 AND proposal_id < $6)){tenants} \
             ORDER BY submit_us DESC, proposal_id DESC LIMIT $7"
        )))
        .bind(&filter.round_id)
        .bind(filter.state.map(ProposalState::as_str).unwrap_or(""))
        .bind(&filter.applicant_uscc)
        .bind(has_after)
        .bind(after_us)
        .bind(after_id)
        .bind(limit);
        for uscc in filter.tenants.iter().flatten() {
            query = query.bind(uscc.clone());
        }
        let rows = query.fetch_all(conn).await?;
        rows.iter().map(proposal_row).collect()
    }

    /// SUBMITTED proposals whose screening began before `stale_before_us`.
    pub async fn proposals_unscreened(
        &self,
        conn: &mut AnyConnection,
        stale_before_us: i64,
        limit: i64,
    ) -> Result<Vec<String>, DbError> {
        Ok(sqlx::query_scalar(
            "SELECT proposal_id FROM proposals WHERE state = 'SUBMITTED' AND step_us <= $1 \
             ORDER BY step_us, proposal_id LIMIT $2",
        )
        .bind(stale_before_us)
        .bind(limit)
        .fetch_all(conn)
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{PAYMENT_COLUMNS, columns};
    use super::*;

    #[test]
    fn the_proposal_columns_hold_the_shared_payment_columns_in_order() {
        // Proves bind_proposal's payment binds line up with the column list.
        assert!(PROPOSAL_COLUMNS.contains(PAYMENT_COLUMNS));
        assert_eq!(columns(PROPOSAL_COLUMNS).count(), 24);
    }
}
