//! The `decisions` table: one immutable row per evaluation answered, holding the encoded
//! `StoredDecision` record the edge built. Storage neither builds nor reads the record: it keeps
//! the bytes with the columns reads filter on.

use sqlx::{AnyPool, Row};
use subsidy_common::db::DbError;

/// Which evaluation made a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecisionKind {
    /// EvaluateComputeVoucher.
    ComputeVoucher,
    /// EvaluateDataInfraProposal.
    DataInfra,
    /// RankSelectionRound.
    SelectionRound,
}

impl DecisionKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::ComputeVoucher => "COMPUTE_VOUCHER",
            DecisionKind::DataInfra => "DATA_INFRA",
            DecisionKind::SelectionRound => "SELECTION_ROUND",
        }
    }
}

/// A decision as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionRow {
    /// Its identifier, a UUID in text.
    pub decision_id: String,
    /// Which evaluation made it.
    pub kind: DecisionKind,
    /// The policy applied.
    pub policy_id: &'static str,
    /// Its exact version.
    pub policy_version: String,
    /// The buyer's or applicant's code as given; empty for a ranking.
    pub subject_uscc: String,
    /// When the evaluation ran, µs.
    pub evaluated_us: i64,
    /// The encoded record.
    pub record: Vec<u8>,
}

/// Stores a decision: one INSERT, on the pool (the evaluation reads nothing it must be atomic
/// with).
pub async fn insert(pool: &AnyPool, row: &DecisionRow) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO decisions (decision_id, kind, policy_id, policy_version, subject_uscc, \
         evaluated_us, record) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&row.decision_id)
    .bind(row.kind.as_str())
    .bind(row.policy_id)
    .bind(&row.policy_version)
    .bind(&row.subject_uscc)
    .bind(row.evaluated_us)
    .bind(row.record.as_slice())
    .execute(pool)
    .await?;
    Ok(())
}

/// A stored decision's subject and record, if the decision exists.
pub async fn get(pool: &AnyPool, decision_id: &str) -> Result<Option<(String, Vec<u8>)>, DbError> {
    let row = sqlx::query("SELECT subject_uscc, record FROM decisions WHERE decision_id = $1")
        .bind(decision_id)
        .fetch_optional(pool)
        .await?;
    row.map(|row| Ok((row.try_get("subject_uscc")?, row.try_get("record")?)))
        .transpose()
}
