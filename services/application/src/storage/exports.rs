//! What the disbursement export reads: the paid claims and awards whose payment date lies in a
//! period, with their beneficiary's name and who approved them, in order of payment date and
//! application id. Payment dates are stored as `YYYY-MM-DD`, so the period is a range of text.

use sqlx::{AnyConnection, Row};
use subsidy_common::db::DbError;

use super::Store;
use crate::domain::statistics::Program;

/// One paid claim or award as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisbursedRow {
    /// Claim or proposal.
    pub program: Program,
    /// The claim or proposal id.
    pub application_id: String,
    /// The beneficiary.
    pub enterprise_uscc: String,
    /// The beneficiary's registered name.
    pub enterprise_name: String,
    /// A claim's contract number, a proposal's title.
    pub subject: String,
    /// The pool that paid.
    pub pool_id: String,
    /// The committed reservation.
    pub reservation_id: String,
    /// Approved (claim) or awarded (proposal), fen.
    pub approved_fen: i64,
    /// Paid, fen.
    pub disbursed_fen: i64,
    /// The payment's reference.
    pub payment_reference: String,
    /// The payment date, `YYYY-MM-DD`.
    pub payment_date: String,
    /// Who recorded the payment.
    pub recorded_by: String,
    /// When the payment was recorded, µs.
    pub recorded_us: i64,
    /// Who approved (the reviewer; the finaliser of an award's round).
    pub approver: String,
    /// When, µs.
    pub approved_us: i64,
}

/// The paid claims: the reviewer approved them.
const CLAIMS: &str = "SELECT c.claim_id, c.enterprise_uscc, e.name, c.contract_number, c.pool_id, \
        c.reservation_id, c.approved_fen, c.disbursed_fen, c.payment_reference, c.payment_date, \
        c.disbursed_by, c.disbursed_us, c.reviewer_id, c.reviewed_us \
    FROM claims AS c JOIN enterprises AS e ON e.uscc = c.enterprise_uscc \
    WHERE c.state = 'DISBURSED' AND c.payment_date >= $1 AND c.payment_date <= $2";

/// The paid awards: whoever finalised the round made the award (its history entry).
const PROPOSALS: &str = "SELECT p.proposal_id, p.applicant_uscc, e.name, p.title, r.pool_id, \
        p.reservation_id, p.awarded_fen, p.disbursed_fen, p.payment_reference, p.payment_date, \
        p.disbursed_by, p.disbursed_us, h.actor, h.created_us \
    FROM proposals AS p \
    JOIN enterprises AS e ON e.uscc = p.applicant_uscc \
    JOIN selection_rounds AS r ON r.round_id = p.round_id \
    JOIN history AS h ON h.application_id = p.proposal_id AND h.to_state = 'AWARDED' \
    WHERE p.state = 'DISBURSED' AND p.payment_date >= $1 AND p.payment_date <= $2";

impl Store {
    /// The claims or awards of `program` (both when `None`) paid from `first_day` to
    /// `last_day` (`YYYY-MM-DD`, both included), in order of payment date and id.
    pub async fn disbursed(
        &self,
        conn: &mut AnyConnection,
        program: Option<Program>,
        (first_day, last_day): (&str, &str),
    ) -> Result<Vec<DisbursedRow>, DbError> {
        let mut rows = Vec::new();
        for (each, sql) in [
            (Program::ComputeVoucher, CLAIMS),
            (Program::DataInfrastructure, PROPOSALS),
        ] {
            if program.is_some_and(|wanted| wanted != each) {
                continue;
            }
            let found = sqlx::query(sql)
                .bind(first_day.to_owned())
                .bind(last_day.to_owned())
                .fetch_all(&mut *conn)
                .await?;
            for row in found {
                rows.push(disbursed_row(each, &row)?);
            }
        }
        rows.sort_by(|a, b| {
            (&a.payment_date, &a.application_id).cmp(&(&b.payment_date, &b.application_id))
        });
        Ok(rows)
    }
}

fn disbursed_row(program: Program, row: &sqlx::any::AnyRow) -> Result<DisbursedRow, sqlx::Error> {
    let reservation_id: Option<String> = row.try_get(5)?;
    let recorded_us: Option<i64> = row.try_get(11)?;
    let approved_us: Option<i64> = row.try_get(13)?;
    Ok(DisbursedRow {
        program,
        application_id: row.try_get(0)?,
        enterprise_uscc: row.try_get(1)?,
        enterprise_name: row.try_get(2)?,
        subject: row.try_get(3)?,
        pool_id: row.try_get(4)?,
        // A paid claim or award was committed: the database's checks keep its reservation.
        reservation_id: reservation_id.unwrap_or_default(),
        approved_fen: row.try_get(6)?,
        disbursed_fen: row.try_get(7)?,
        payment_reference: row.try_get(8)?,
        payment_date: row.try_get(9)?,
        recorded_by: row.try_get(10)?,
        recorded_us: recorded_us.unwrap_or_default(),
        approver: row.try_get(12)?,
        approved_us: approved_us.unwrap_or_default(),
    })
}
