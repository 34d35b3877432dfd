//! The disbursement export (`ExportDisbursements`): read-only, and streamed. The paid claims and
//! awards of the period are read a page at a time, every page in one snapshot of the database
//! (a read-only transaction held for the whole export), so that the pages are one consistent
//! export however many payments are recorded meanwhile; each page's rows are given the sequence
//! numbers of their reservation's ledger entries, asked of the budget service reservation by
//! reservation (never a pool's whole ledger), so that finance's totals can be checked against
//! the ledger entry by entry. Memory holds one page, whatever the length of the period.
//! The totals are counted as the rows go and are known once the last page is read; a failure
//! on the way ends the export without them (the caller sends it as the call's status).

use futures::{StreamExt, TryStreamExt};
use subsidy_common::db::DbError;

use super::Workflow;
use crate::domain::statistics::{Period, Program};
use crate::error::ApplicationError;
use crate::storage::exports::{DisbursedRow, ExportPosition};
use crate::storage::{Store, Tx};
use crate::upstream::Peers;

/// Rows read from the database per page of the export.
#[cfg(not(feature = "test-faults"))]
const EXPORT_PAGE_ROWS: i64 = 100;
/// Builds for tests read pages of two rows, so that the few payments of a test make several
/// pages (and a failure can be placed after the first).
#[cfg(feature = "test-faults")]
const EXPORT_PAGE_ROWS: i64 = 2;
/// Budget calls in flight at once while the ledger entries of a page's reservations are read.
const LEDGER_LOOKUPS_IN_FLIGHT_MAX: usize = 8;

/// One row of the export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportRow {
    /// The paid claim or award.
    pub paid: DisbursedRow,
    /// The pool ledger's entries of its reservation, in ledger order.
    pub ledger_sequences: Vec<i64>,
}

/// The totals of the rows read so far; of the whole export once the last page is read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportTotals {
    /// The number of rows.
    pub row_count: i64,
    /// The sum of the approved amounts, fen.
    pub approved_total_fen: i64,
    /// The sum of the paid amounts, fen.
    pub disbursed_total_fen: i64,
}

/// An export being read: its snapshot, where the next page starts, and the totals so far.
/// Dropping it ends the snapshot (nothing was written).
pub struct DisbursementExport {
    store: Store,
    peers: Peers,
    /// The snapshot every page is read in; `None` once the last page was read.
    snapshot: Option<Tx>,
    program: Option<Program>,
    first_day: String,
    last_day: String,
    after: ExportPosition,
    totals: ExportTotals,
}

impl std::fmt::Debug for DisbursementExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DisbursementExport")
            .field("program", &self.program)
            .field("first_day", &self.first_day)
            .field("last_day", &self.last_day)
            .field("after", &self.after)
            .field("totals", &self.totals)
            .finish_non_exhaustive()
    }
}

impl Workflow {
    /// Starts the export of the disbursements of `program` (both programs when `None`) paid
    /// within `period`: takes the snapshot the pages are read in.
    pub async fn disbursement_export(
        &self,
        program: Option<Program>,
        period: Period,
    ) -> Result<DisbursementExport, ApplicationError> {
        let snapshot = self.store.db().begin_snapshot().await?;
        Ok(DisbursementExport {
            store: self.store.clone(),
            peers: self.peers.clone(),
            snapshot: Some(snapshot),
            program,
            first_day: period.first_day().format("%Y-%m-%d").to_string(),
            last_day: period.last_day().format("%Y-%m-%d").to_string(),
            after: ExportPosition::default(),
            totals: ExportTotals::default(),
        })
    }
}

impl DisbursementExport {
    /// The next page of rows with their ledger entries, in order of payment date and
    /// application id; `None` once every row has been read (the snapshot has ended then, and
    /// [`DisbursementExport::totals`] are the export's).
    pub async fn next_page(&mut self) -> Result<Option<Vec<ExportRow>>, ApplicationError> {
        let Some(snapshot) = self.snapshot.as_mut() else {
            return Ok(None);
        };
        let paid = self
            .store
            .disbursed_page(
                snapshot,
                self.program,
                (&self.first_day, &self.last_day),
                &self.after,
                EXPORT_PAGE_ROWS,
            )
            .await?;
        if paid.len() < usize::try_from(EXPORT_PAGE_ROWS).expect("a page size fits in usize") {
            // The last page: read-only, so ending the snapshot changes nothing.
            if let Some(snapshot) = self.snapshot.take() {
                snapshot.rollback().await.map_err(DbError::from)?;
            }
        }
        let Some(last) = paid.last() else {
            return Ok(None);
        };
        self.after = ExportPosition::after(last);
        let mut totals = self.totals;
        for row in &paid {
            totals = ExportTotals {
                row_count: checked_sum(totals.row_count, 1)?,
                approved_total_fen: checked_sum(totals.approved_total_fen, row.approved_fen)?,
                disbursed_total_fen: checked_sum(totals.disbursed_total_fen, row.disbursed_fen)?,
            };
        }
        let peers = &self.peers;
        let rows: Vec<ExportRow> = futures::stream::iter(paid)
            .map(|paid| async move {
                #[cfg(feature = "test-faults")]
                if crate::faults::fails(
                    crate::faults::Point::ExportLedgerLookup,
                    &paid.reservation_id,
                ) {
                    return Err(crate::upstream::PeerError::Unavailable("budget").into());
                }
                let ledger_sequences = peers
                    .reservation_ledger_sequences(&paid.pool_id, &paid.reservation_id)
                    .await?;
                Ok::<_, ApplicationError>(ExportRow {
                    paid,
                    ledger_sequences,
                })
            })
            .buffered(LEDGER_LOOKUPS_IN_FLIGHT_MAX)
            .try_collect()
            .await?;
        self.totals = totals;
        Ok(Some(rows))
    }

    /// The totals of the rows returned so far: the export's once [`Self::next_page`] has
    /// returned `None`.
    pub fn totals(&self) -> ExportTotals {
        self.totals
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
