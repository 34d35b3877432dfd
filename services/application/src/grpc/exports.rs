//! `ExportDisbursements` at the edge: the program and period parsed (every violation at once),
//! and the export streamed as the proto defines: the rows page by page as they are read, then
//! the totals; or, when something fails on the way, the failure's status instead of the totals.

use futures::StreamExt;
use subsidy_common::edge::{self, Violations};
use subsidy_proto::application as pb;

use super::fields::period;
use crate::domain::statistics::{Period, Program};
use crate::workflow::{DisbursementExport, ExportRow, ExportTotals};

/// The stream of `ExportDisbursements`.
pub(super) type DisbursementStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<pb::ExportDisbursementsResponse, tonic::Status>> + Send>,
>;

/// The program (both when `None`) and the period of a request; `None` only after recording
/// a violation.
pub(super) fn parse(
    v: &mut Violations,
    request: &pb::ExportDisbursementsRequest,
) -> Option<(Option<Program>, Period)> {
    let program = match pb::ApplicationKind::try_from(request.program) {
        Ok(pb::ApplicationKind::Unspecified) => Some(None),
        Ok(pb::ApplicationKind::ComputeVoucherClaim) => Some(Some(Program::ComputeVoucher)),
        Ok(pb::ApplicationKind::DataInfrastructureProposal) => {
            Some(Some(Program::DataInfrastructure))
        }
        Err(_) => {
            v.add(
                "program",
                "must be APPLICATION_KIND_UNSPECIFIED (both programs), \
                 APPLICATION_KIND_COMPUTE_VOUCHER_CLAIM or \
                 APPLICATION_KIND_DATA_INFRASTRUCTURE_PROPOSAL",
            );
            None
        }
    };
    let period = period(
        v,
        ("from_date", request.from_date.as_ref()),
        ("to_date", request.to_date.as_ref()),
    );
    Some((program?, period?))
}

/// The stream of `export`: each page's rows as soon as they are read, then the totals. A
/// failure on the way ends the stream with its status and without the totals, so that a client
/// never takes a partial export for a whole one.
pub(super) fn stream(export: DisbursementExport) -> DisbursementStream {
    use pb::export_disbursements_response::Item;
    let pages = futures::stream::unfold(Some(export), |export| async move {
        let mut export = export?;
        let messages = match export.next_page().await {
            Ok(Some(rows)) => {
                let messages = rows
                    .into_iter()
                    .map(|row| Ok(message(Item::Row(disbursement_row(row)))))
                    .collect();
                return Some((messages, Some(export)));
            }
            Ok(None) => vec![Ok(message(Item::Totals(totals(export.totals()))))],
            Err(error) => vec![Err(tonic::Status::from(error))],
        };
        Some((messages, None))
    });
    Box::pin(pages.flat_map(futures::stream::iter))
}

fn message(item: pb::export_disbursements_response::Item) -> pb::ExportDisbursementsResponse {
    pb::ExportDisbursementsResponse { item: Some(item) }
}

fn totals(totals: ExportTotals) -> pb::DisbursementTotals {
    pb::DisbursementTotals {
        row_count: totals.row_count,
        approved_total: edge::money(totals.approved_total_fen),
        disbursed_total: edge::money(totals.disbursed_total_fen),
    }
}

fn disbursement_row(row: ExportRow) -> pb::DisbursementRow {
    let ExportRow {
        paid,
        ledger_sequences,
    } = row;
    let kind = match paid.program {
        Program::ComputeVoucher => pb::ApplicationKind::ComputeVoucherClaim,
        Program::DataInfrastructure => pb::ApplicationKind::DataInfrastructureProposal,
    };
    pb::DisbursementRow {
        kind: kind as i32,
        application_id: paid.application_id,
        enterprise_uscc: paid.enterprise_uscc,
        enterprise_name: paid.enterprise_name,
        subject: paid.subject,
        pool_id: paid.pool_id,
        reservation_id: paid.reservation_id,
        approved_amount: edge::money(paid.approved_fen),
        disbursed_amount: edge::money(paid.disbursed_fen),
        payment_reference: paid.payment_reference,
        payment_date: edge::date_text(&paid.payment_date),
        recorded_by: paid.recorded_by,
        record_time: Some(edge::timestamp(paid.recorded_us)),
        approver: paid.approver,
        approve_time: Some(edge::timestamp(paid.approved_us)),
        ledger_sequences,
    }
}
