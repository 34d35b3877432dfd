//! What the disbursement export reads: the paid claims and awards whose payment date lies in a
//! period, with their beneficiary's name and who approved them, in order of payment date and
//! application id, a page at a time after the last row read (keyset pagination: the caller
//! reads every page in one snapshot, so that the pages together are one consistent export).
//! Payment dates are stored as `YYYY-MM-DD`, so the period is a range of text. Claim and
//! proposal ids differ by their prefix, so (payment date, id) orders the rows of both without
//! ties, and one query orders and compares them (the database's own collation for both).

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

/// Where a page of the export starts: after this (payment date, application id); the
/// default (empty texts) starts before every row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportPosition {
    /// The payment date of the last row read, `YYYY-MM-DD`.
    pub payment_date: String,
    /// Its application id.
    pub application_id: String,
}

impl ExportPosition {
    /// The position just after `row`.
    pub fn after(row: &DisbursedRow) -> Self {
        ExportPosition {
            payment_date: row.payment_date.clone(),
            application_id: row.application_id.clone(),
        }
    }
}

/// The paid claims: the reviewer approved them. `$1`/`$2` are the period, `$3`/`$4` the
/// position the page starts after.
const CLAIMS: &str = "SELECT 'CLAIM' AS kind, c.claim_id AS application_id, c.enterprise_uscc, \
        e.name, c.contract_number, c.pool_id, c.reservation_id, c.approved_fen, \
        c.disbursed_fen, c.payment_reference, c.payment_date AS payment_date, c.disbursed_by, \
        c.disbursed_us, c.reviewer_id, c.reviewed_us \
    FROM claims AS c JOIN enterprises AS e ON e.uscc = c.enterprise_uscc \
    WHERE c.state = 'DISBURSED' AND c.payment_date >= $1 AND c.payment_date <= $2 \
        AND (c.payment_date > $3 OR (c.payment_date = $3 AND c.claim_id > $4))";

/// The paid awards: whoever finalised the round made the award (its history entry).
const PROPOSALS: &str = "SELECT 'PROPOSAL' AS kind, p.proposal_id AS application_id, \
        p.applicant_uscc, e.name, p.title, r.pool_id, p.reservation_id, p.awarded_fen, \
        p.disbursed_fen, p.payment_reference, p.payment_date AS payment_date, p.disbursed_by, \
        p.disbursed_us, h.actor, h.created_us \
    FROM proposals AS p \
    JOIN enterprises AS e ON e.uscc = p.applicant_uscc \
    JOIN selection_rounds AS r ON r.round_id = p.round_id \
    JOIN history AS h ON h.application_id = p.proposal_id AND h.to_state = 'AWARDED' \
    WHERE p.state = 'DISBURSED' AND p.payment_date >= $1 AND p.payment_date <= $2 \
        AND (p.payment_date > $3 OR (p.payment_date = $3 AND p.proposal_id > $4))";

impl Store {
    /// Up to `limit` claims or awards of `program` (both when `None`) paid from `first_day` to
    /// `last_day` (`YYYY-MM-DD`, both included), in order of payment date and id, starting
    /// after `after`.
    pub async fn disbursed_page(
        &self,
        conn: &mut AnyConnection,
        program: Option<Program>,
        (first_day, last_day): (&str, &str),
        after: &ExportPosition,
        limit: i64,
    ) -> Result<Vec<DisbursedRow>, DbError> {
        let paid = match program {
            None => format!("{CLAIMS} UNION ALL {PROPOSALS}"),
            Some(Program::ComputeVoucher) => CLAIMS.to_owned(),
            Some(Program::DataInfrastructure) => PROPOSALS.to_owned(),
        };
        let found = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT * FROM ({paid}) AS paid ORDER BY payment_date, application_id LIMIT $5"
        )))
        .bind(first_day.to_owned())
        .bind(last_day.to_owned())
        .bind(after.payment_date.clone())
        .bind(after.application_id.clone())
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
        Ok(found.iter().map(disbursed_row).collect::<Result<_, _>>()?)
    }
}

fn disbursed_row(row: &sqlx::any::AnyRow) -> Result<DisbursedRow, sqlx::Error> {
    let kind: String = row.try_get(0)?;
    let program = match kind.as_str() {
        "CLAIM" => Program::ComputeVoucher,
        "PROPOSAL" => Program::DataInfrastructure,
        other => {
            return Err(sqlx::Error::Decode(
                format!("an export row of unknown kind {other:?}").into(),
            ));
        }
    };
    let reservation_id: Option<String> = row.try_get(6)?;
    let recorded_us: Option<i64> = row.try_get(12)?;
    let approved_us: Option<i64> = row.try_get(14)?;
    Ok(DisbursedRow {
        program,
        application_id: row.try_get(1)?,
        enterprise_uscc: row.try_get(2)?,
        enterprise_name: row.try_get(3)?,
        subject: row.try_get(4)?,
        pool_id: row.try_get(5)?,
        // A paid claim or award was committed: the database's checks keep its reservation.
        reservation_id: reservation_id.unwrap_or_default(),
        approved_fen: row.try_get(7)?,
        disbursed_fen: row.try_get(8)?,
        payment_reference: row.try_get(9)?,
        payment_date: row.try_get(10)?,
        recorded_by: row.try_get(11)?,
        recorded_us: recorded_us.unwrap_or_default(),
        approver: row.try_get(13)?,
        approved_us: approved_us.unwrap_or_default(),
    })
}
