//! The `decisions` table: one immutable row per evaluation answered, holding the encoded
//! `StoredDecision` record the edge built. Storage neither builds nor reads the record: it keeps
//! the bytes with the columns reads filter on.

use sqlx::{AnyPool, Row};
use subsidy_common::db::DbError;
use subsidy_common::group_commit::GroupCommit;

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

/// Most decisions written by one statement: 7 parameters each, far below either database's
/// limit on bound parameters, and one statement's worth of traces (tens of KiB each).
pub const BATCH_DECISIONS_MAX: usize = 64;

/// The decisions' writer: concurrent evaluations' decisions are written together, in one
/// multi-row INSERT committed once, instead of one commit (and one fsync) each.
pub type DecisionLog = GroupCommit<DecisionRow>;

/// Starts the decisions' writer over `pool` (on the current runtime).
pub fn spawn_log(pool: AnyPool) -> DecisionLog {
    GroupCommit::spawn(BATCH_DECISIONS_MAX, move |rows: Vec<DecisionRow>| {
        let pool = pool.clone();
        async move { write_batch(&pool, &rows).await }
    })
}

/// Writes `rows` in one statement; if that fails and there was more than one row, writes each
/// on its own, so that one row the database refuses does not refuse the others' evaluations.
/// One result per row, in order.
pub async fn write_batch(pool: &AnyPool, rows: &[DecisionRow]) -> Vec<Result<(), DbError>> {
    match insert_all(pool, rows).await {
        Ok(()) => rows.iter().map(|_| Ok(())).collect(),
        Err(error) if rows.len() == 1 => vec![Err(error)],
        Err(error) => {
            tracing::warn!(rows = rows.len(), %error, "a batch of decisions failed; written one by one");
            let mut results = Vec::with_capacity(rows.len());
            for row in rows {
                results.push(insert_all(pool, std::slice::from_ref(row)).await);
            }
            results
        }
    }
}

/// Stores decisions: one INSERT of every row, on the pool (an evaluation reads nothing it must
/// be atomic with).
pub async fn insert_all(pool: &AnyPool, rows: &[DecisionRow]) -> Result<(), DbError> {
    const COLUMNS: usize = 7;
    let mut sql = String::from(
        "INSERT INTO decisions (decision_id, kind, policy_id, policy_version, subject_uscc, \
         evaluated_us, record) VALUES ",
    );
    for index in 0..rows.len() {
        let first = index * COLUMNS + 1;
        if index > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..COLUMNS {
            if column > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", first + column));
        }
        sql.push(')');
    }
    // Built from placeholders only: every value is bound.
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for row in rows {
        query = query
            .bind(&row.decision_id)
            .bind(row.kind.as_str())
            .bind(row.policy_id)
            .bind(&row.policy_version)
            .bind(&row.subject_uscc)
            .bind(row.evaluated_us)
            .bind(row.record.as_slice());
    }
    query.execute(pool).await?;
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
