//! `ExportDisbursements` at the edge: the program and period parsed (every violation at once),
//! and the export rendered as the stream the proto defines: the rows, then the totals.

use subsidy_common::edge::{self, Violations};
use subsidy_proto::application as pb;

use super::fields::period;
use crate::domain::statistics::{Period, Program};
use crate::workflow::{DisbursementExport, ExportRow};

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

/// The messages of the stream: one per row, then the totals.
pub(super) fn render(export: DisbursementExport) -> Vec<pb::ExportDisbursementsResponse> {
    use pb::export_disbursements_response::Item;
    let totals = pb::DisbursementTotals {
        row_count: i64::try_from(export.rows.len()).expect("rows fit in memory, so in i64"),
        approved_total: edge::money(export.approved_total_fen),
        disbursed_total: edge::money(export.disbursed_total_fen),
    };
    export
        .rows
        .into_iter()
        .map(|row| Item::Row(disbursement_row(row)))
        .chain(std::iter::once(Item::Totals(totals)))
        .map(|item| pb::ExportDisbursementsResponse { item: Some(item) })
        .collect()
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
