//! The disbursement export (`ExportDisbursements`): read-only. The paid claims and awards of
//! the period are read in one snapshot; then each pool's ledger is read from the budget service
//! once, page by page, and every row is given the sequence numbers of its reservation's entries,
//! so that finance's totals can be checked against the ledger entry by entry.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use subsidy_common::db::DbError;

use super::Workflow;
use crate::domain::statistics::{Period, Program};
use crate::error::ApplicationError;
use crate::storage::Conn;
use crate::storage::exports::DisbursedRow;

/// One row of the export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportRow {
    /// The paid claim or award.
    pub paid: DisbursedRow,
    /// The pool ledger's entries of its reservation, in ledger order.
    pub ledger_sequences: Vec<i64>,
}

/// The export of a period: its rows and their totals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisbursementExport {
    /// The rows, in order of payment date and application id.
    pub rows: Vec<ExportRow>,
    /// The sum of the approved amounts, fen.
    pub approved_total_fen: i64,
    /// The sum of the paid amounts, fen.
    pub disbursed_total_fen: i64,
}

impl Workflow {
    /// The disbursements of `program` (both programs when `None`) paid within `period`.
    pub async fn disbursement_export(
        &self,
        program: Option<Program>,
        period: Period,
    ) -> Result<DisbursementExport, ApplicationError> {
        let first_day = period.first_day().format("%Y-%m-%d").to_string();
        let last_day = period.last_day().format("%Y-%m-%d").to_string();
        let mut tx = self.store.db().begin_snapshot().await?;
        let conn: &mut Conn = &mut tx;
        let paid = self
            .store
            .disbursed(conn, program, (&first_day, &last_day))
            .await?;
        // Read-only: ending the snapshot changes nothing.
        tx.rollback().await.map_err(DbError::from)?;

        let mut ledger = self.ledger_sequences(&paid).await?;
        let mut rows = Vec::with_capacity(paid.len());
        let (mut approved_total_fen, mut disbursed_total_fen) = (0_i64, 0_i64);
        for paid in paid {
            approved_total_fen = checked_sum(approved_total_fen, paid.approved_fen)?;
            disbursed_total_fen = checked_sum(disbursed_total_fen, paid.disbursed_fen)?;
            let ledger_sequences = ledger
                .remove(&(paid.pool_id.clone(), paid.reservation_id.clone()))
                .unwrap_or_default();
            rows.push(ExportRow {
                paid,
                ledger_sequences,
            });
        }
        Ok(DisbursementExport {
            rows,
            approved_total_fen,
            disbursed_total_fen,
        })
    }

    /// The ledger entries of the reservations of `paid`, by pool and reservation: each pool's
    /// ledger read once, page by page.
    async fn ledger_sequences(
        &self,
        paid: &[DisbursedRow],
    ) -> Result<HashMap<(String, String), Vec<i64>>, ApplicationError> {
        let mut wanted: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for row in paid {
            wanted
                .entry(row.pool_id.as_str())
                .or_default()
                .insert(row.reservation_id.as_str());
        }
        let mut found: HashMap<(String, String), Vec<i64>> = HashMap::new();
        for (pool_id, reservations) in wanted {
            let mut page_token = String::new();
            loop {
                let (entries, next) = self.peers.ledger_page(pool_id, page_token).await?;
                for entry in entries {
                    if reservations.contains(entry.reservation_id.as_str()) {
                        found
                            .entry((pool_id.to_owned(), entry.reservation_id))
                            .or_default()
                            .push(entry.sequence);
                    }
                }
                if next.is_empty() {
                    break;
                }
                page_token = next;
            }
        }
        Ok(found)
    }
}

/// `total + amount`; amounts the database holds sum within range unless its records are
/// corrupt, which is reported as such (INTERNAL).
fn checked_sum(total: i64, amount: i64) -> Result<i64, ApplicationError> {
    total.checked_add(amount).ok_or_else(|| {
        DbError::Other(sqlx::Error::Decode(
            "the disbursed amounts sum beyond 64 bits of fen".into(),
        ))
        .into()
    })
}
