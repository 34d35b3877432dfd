//! The invoices of `SubmitClaim` and `AddClaimInvoices` at the edge: each invoice's identity
//! (an 8-digit number with a 10- or 12-digit code, or a 20-digit number alone), date, amount
//! and parties parsed, every violation at once.

use subsidy_common::edge::Violations;
use subsidy_proto::application as pb;

use crate::domain::invoices::{INVOICES_PER_CALL_MAX, NewInvoice, is_invoice_identity};

/// The invoices of a request under `field`, at most [`INVOICES_PER_CALL_MAX`]; at least one
/// when `required`. `None` only after recording a violation.
pub(super) fn invoices(
    v: &mut Violations,
    field: &str,
    invoices: &[pb::Invoice],
    required: bool,
) -> Option<Vec<NewInvoice>> {
    if required && invoices.is_empty() {
        v.add(field, "at least one invoice is required");
        return None;
    }
    if invoices.len() > INVOICES_PER_CALL_MAX {
        v.add(field, format!("at most {INVOICES_PER_CALL_MAX} invoices"));
        return None;
    }
    let mut parsed = Some(Vec::with_capacity(invoices.len()));
    for (i, invoice) in invoices.iter().enumerate() {
        let one = self::invoice(v, &format!("{field}[{i}]"), invoice);
        match (one, parsed.as_mut()) {
            (Some(one), Some(all)) => all.push(one),
            _ => parsed = None,
        }
    }
    parsed
}

fn invoice(v: &mut Violations, field: &str, invoice: &pb::Invoice) -> Option<NewInvoice> {
    let identity = is_invoice_identity(&invoice.invoice_code, &invoice.invoice_number);
    if !identity {
        v.add(
            &format!("{field}.invoice_number"),
            "must be 8 digits with a 10- or 12-digit invoice_code, or 20 digits without one",
        );
    }
    let issue_date = v.date(&format!("{field}.issue_date"), invoice.issue_date.as_ref());
    let amount = v.positive_money(&format!("{field}.amount"), invoice.amount.as_ref());
    let seller = v.uscc(&format!("{field}.seller_uscc"), &invoice.seller_uscc);
    let buyer = v.uscc(&format!("{field}.buyer_uscc"), &invoice.buyer_uscc);
    if !identity {
        return None;
    }
    Some(NewInvoice {
        code: invoice.invoice_code.clone(),
        number: invoice.invoice_number.clone(),
        issue_date: issue_date?,
        amount: amount?,
        seller: seller?,
        buyer: buyer?,
    })
}
