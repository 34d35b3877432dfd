//! The reasons of compute-voucher invoices: refused identities, parties, dates and totals, an
//! invoice claimed twice, an unknown invoice verified.

use super::*;

/// The invoice reasons, on `claim` (PENDING_REVIEW, a contract of 1,000,000.00 signed on 18
/// June 2025 with seller 1, no invoices yet) of `buyer`. Leaves the claim with one VERIFIED
/// invoice of one fen, so that an approval on it is refused on recheck.
pub(super) async fn invoice_reasons(
    app: &mut App,
    claim: &pb::Claim,
    buyer: &subsidy_common::Uscc,
    seen: &mut Seen,
) {
    let signed = Date {
        year: 2025,
        month: 6,
        day: 18,
    };
    let seller_uscc = seller(1).to_string();
    let with_invoice = |request_id: &str, number: &str, invoice: pb::Invoice| {
        let mut request = submit(request_id, buyer, contract(number, &seller(1), 100_000_000));
        request.invoices = vec![invoice];
        request
    };
    seen.refused(
        app.submit_claim(with_invoice(
            "i-party",
            "R-I1",
            invoice("i-party", &seller_uscc, &seller_uscc, 100, signed),
        ))
        .await,
        Code::InvalidArgument,
        APPLICATION,
        "INVOICE_PARTY_MISMATCH",
    );
    let before = Date {
        year: 2025,
        month: 6,
        day: 17,
    };
    seen.refused(
        app.submit_claim(with_invoice(
            "i-date",
            "R-I2",
            invoice("i-date", &seller_uscc, buyer.as_str(), 100, before),
        ))
        .await,
        Code::InvalidArgument,
        APPLICATION,
        "INVOICE_DATE_OUT_OF_RANGE",
    );
    seen.refused(
        app.submit_claim(with_invoice(
            "i-total",
            "R-I3",
            invoice("i-total", &seller_uscc, buyer.as_str(), 100_000_001, signed),
        ))
        .await,
        Code::InvalidArgument,
        APPLICATION,
        "INVOICE_TOTAL_EXCEEDS_CONTRACT",
    );
    seen.refused(
        app.approve_claim(approve("a-unverified", &claim.claim_id, 100_000_000))
            .await,
        Code::FailedPrecondition,
        APPLICATION,
        "NO_VERIFIED_INVOICE",
    );
    let verify = |request_id: &str, number: &str| pb::VerifyClaimInvoiceRequest {
        request_id: request_id.into(),
        claim_id: claim.claim_id.clone(),
        invoice_code: String::new(),
        invoice_number: number.into(),
        state: pb::InvoiceVerificationState::Verified as i32,
        note: String::new(),
    };
    seen.refused(
        app.verify_claim_invoice(verify("v-missing", &invoice_number("nowhere")))
            .await,
        Code::NotFound,
        APPLICATION,
        "INVOICE_NOT_FOUND",
    );
    let one_fen = invoice("i-one-fen", &seller_uscc, buyer.as_str(), 1, signed);
    let add = |request_id: &str| pb::AddClaimInvoicesRequest {
        request_id: request_id.into(),
        claim_id: claim.claim_id.clone(),
        invoices: vec![one_fen.clone()],
    };
    app.add_claim_invoices(add("i-add")).await.unwrap();
    app.verify_claim_invoice(verify("v-one-fen", &one_fen.invoice_number))
        .await
        .unwrap();
    seen.refused_with(
        app.add_claim_invoices(add("i-add-again")).await,
        Code::AlreadyExists,
        APPLICATION,
        "INVOICE_ALREADY_CLAIMED",
        &["claim_id"],
    );
}
