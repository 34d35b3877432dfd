//! The invoices of compute-voucher claims through the application service with fake peers:
//! an invoice is claimed at most once (also under concurrent submissions, which the database's
//! unique index decides), the invoiced total stays within the contract total, approval settles
//! on the verified invoices only and is refused without one, and AddClaimInvoices and
//! VerifyClaimInvoice are idempotent by request id.

mod support;

use futures::future::join_all;
use subsidy_common::config::ServiceKind;
use subsidy_proto::application as pb;
use subsidy_proto::google::r#type::Date;
use subsidy_proto::status::{metadata, reason};
use support::*;
use tonic::Code;

/// The signing date of the kit's [`contract`].
const SIGNED: Date = Date {
    year: 2025,
    month: 6,
    day: 18,
};

/// An invoice of `amount_fen` for a kit contract of seller 1 to `buyer`, dated on signing.
fn invoice_of(seed: &str, buyer: &subsidy_common::Uscc, amount_fen: i64) -> pb::Invoice {
    invoice(seed, seller(1).as_str(), buyer.as_str(), amount_fen, SIGNED)
}

/// A `SubmitClaim` of `buyer` for a contract `number` of 10,000,000.00 with `invoices`.
fn submit_invoiced(
    request_id: &str,
    buyer: &subsidy_common::Uscc,
    number: &str,
    invoices: Vec<pb::Invoice>,
) -> pb::SubmitClaimRequest {
    let mut request = submit(request_id, buyer, contract(number, &seller(1), 10_000_000));
    request.invoices = invoices;
    request
}

fn verify(
    request_id: &str,
    claim_id: &str,
    number: &str,
    verified: bool,
) -> pb::VerifyClaimInvoiceRequest {
    pb::VerifyClaimInvoiceRequest {
        request_id: request_id.into(),
        claim_id: claim_id.into(),
        invoice_code: String::new(),
        invoice_number: number.into(),
        state: if verified {
            pb::InvoiceVerificationState::Verified
        } else {
            pb::InvoiceVerificationState::Rejected
        } as i32,
        note: "checked against the tax bureau's platform".into(),
    }
}

#[tokio::test]
async fn the_same_invoice_on_a_second_claim_is_refused_until_the_first_is_withdrawn() {
    // Proves an invoice is claimed once: a second claim with it is refused whole (no claim, no
    // invoice recorded), at submission and when added later; a withdrawn claim frees it.
    let (stack, _peers) = with_pool(POOL_2025_FEN, LONG_HOLD_SECONDS, &[]).await;
    let mut app = stack.app().await;
    let buyer = shandong(301);
    register(&mut app, &buyer).await;
    let shared = invoice_of("shared", &buyer, 5_000_000);
    let first = app
        .submit_claim(submit_invoiced(
            "inv-1",
            &buyer,
            "INV-1",
            vec![shared.clone()],
        ))
        .await
        .unwrap()
        .into_inner()
        .claim
        .unwrap();
    assert_eq!(first.invoices.len(), 1);
    assert_eq!(fen_of(&first.invoiced_amount), 5_000_000);
    assert_eq!(
        first.invoices[0].verification.as_ref().unwrap().state(),
        pb::InvoiceVerificationState::Unverified
    );
    let db = stack.database(ServiceKind::Application).await;
    let status = app
        .submit_claim(submit_invoiced(
            "inv-2",
            &buyer,
            "INV-2",
            vec![shared.clone()],
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(reason(&status).as_deref(), Some("INVOICE_ALREADY_CLAIMED"));
    assert_eq!(metadata(&status)["invoice_number"], shared.invoice_number);
    assert_eq!(count(&db, "claims").await, 1);
    assert_eq!(count(&db, "claim_invoices").await, 1);

    // Added to another claim in review: refused, that claim unchanged.
    let other = submitted(
        &mut app,
        "inv-3",
        &buyer,
        contract("INV-3", &seller(1), 10_000_000),
    )
    .await;
    assert_eq!(other.state(), pb::ClaimState::PendingReview);
    let status = app
        .add_claim_invoices(pb::AddClaimInvoicesRequest {
            request_id: "inv-3-add".into(),
            claim_id: other.claim_id.clone(),
            invoices: vec![invoice_of("own", &buyer, 1_000_000), shared.clone()],
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&status).as_deref(), Some("INVOICE_ALREADY_CLAIMED"));
    assert_eq!(metadata(&status)["claim_id"], other.claim_id);
    assert_eq!(get_claim(&mut app, &other.claim_id).await, other);

    // Withdrawn, the first claim frees its invoice.
    app.withdraw_claim(pb::WithdrawClaimRequest {
        request_id: "inv-1-withdraw".into(),
        claim_id: first.claim_id.clone(),
        reason: "wrong contract".into(),
    })
    .await
    .unwrap();
    let second = app
        .submit_claim(submit_invoiced(
            "inv-2-again",
            &buyer,
            "INV-2",
            vec![shared.clone()],
        ))
        .await
        .unwrap()
        .into_inner()
        .claim
        .unwrap();
    assert_eq!(second.invoices[0].invoice_number, shared.invoice_number);
}

#[tokio::test]
async fn concurrent_claims_with_one_invoice_record_exactly_one() {
    // Proves the invoice's uniqueness holds under concurrent submissions of different
    // contracts: the database's unique index lets exactly one record it.
    let (stack, _peers) = with_pool(POOL_2025_FEN, LONG_HOLD_SECONDS, &[]).await;
    let mut app = stack.app().await;
    let buyer = shandong(302);
    register(&mut app, &buyer).await;
    let shared = invoice_of("race", &buyer, 1_000_000);
    let results = join_all((0..8).map(|i| {
        let mut app = app.clone();
        let request = submit_invoiced(
            &format!("race-{i}"),
            &buyer,
            &format!("RACE-{i}"),
            vec![shared.clone()],
        );
        async move { app.submit_claim(request).await }
    }))
    .await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    for status in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(reason(status).as_deref(), Some("INVOICE_ALREADY_CLAIMED"));
    }
    let db = stack.database(ServiceKind::Application).await;
    assert_eq!(count(&db, "claims").await, 1);
    assert_eq!(count(&db, "claim_invoices").await, 1);
}

#[tokio::test]
async fn an_invoiced_total_above_the_contract_total_is_refused() {
    // Proves the invoiced total of a claim never exceeds its contract total, at submission and
    // when invoices are added, and that the refusal changes nothing.
    let (stack, _peers) = with_pool(POOL_2025_FEN, LONG_HOLD_SECONDS, &[]).await;
    let mut app = stack.app().await;
    let buyer = shandong(303);
    register(&mut app, &buyer).await;
    let status = app
        .submit_claim(submit_invoiced(
            "over-1",
            &buyer,
            "OVER-1",
            vec![
                invoice_of("over-a", &buyer, 6_000_000),
                invoice_of("over-b", &buyer, 4_000_001),
            ],
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        reason(&status).as_deref(),
        Some("INVOICE_TOTAL_EXCEEDS_CONTRACT")
    );
    assert_eq!(metadata(&status)["invoiced_amount"], "100000.01");
    let db = stack.database(ServiceKind::Application).await;
    assert_eq!(count(&db, "claims").await, 0);

    let claim = app
        .submit_claim(submit_invoiced(
            "over-2",
            &buyer,
            "OVER-1",
            vec![invoice_of("over-a", &buyer, 6_000_000)],
        ))
        .await
        .unwrap()
        .into_inner()
        .claim
        .unwrap();
    let status = app
        .add_claim_invoices(pb::AddClaimInvoicesRequest {
            request_id: "over-add".into(),
            claim_id: claim.claim_id.clone(),
            invoices: vec![invoice_of("over-b", &buyer, 4_000_001)],
        })
        .await
        .unwrap_err();
    assert_eq!(
        reason(&status).as_deref(),
        Some("INVOICE_TOTAL_EXCEEDS_CONTRACT")
    );
    assert_eq!(get_claim(&mut app, &claim.claim_id).await, claim);
    assert_eq!(count(&db, "claim_invoices").await, 1);
    // Exactly up to the total is fine.
    let added = app
        .add_claim_invoices(pb::AddClaimInvoicesRequest {
            request_id: "over-add-fits".into(),
            claim_id: claim.claim_id.clone(),
            invoices: vec![invoice_of("over-c", &buyer, 4_000_000)],
        })
        .await
        .unwrap()
        .into_inner()
        .claim
        .unwrap();
    assert_eq!(fen_of(&added.invoiced_amount), 10_000_000);
}

#[tokio::test]
async fn approval_settles_on_the_verified_invoices_only_and_is_refused_without_one() {
    // Proves approval without a VERIFIED invoice is FAILED_PRECONDITION/NO_VERIFIED_INVOICE and
    // changes nothing; with one verified and one rejected invoice the verified amount is the
    // verified one's alone and the approved amount is computed from it (5% scripted rate); a
    // verified_paid_amount that differs is refused.
    let (stack, _peers) = with_pool(POOL_2025_FEN, LONG_HOLD_SECONDS, &[]).await;
    let mut app = stack.app().await;
    let buyer = shandong(304);
    register(&mut app, &buyer).await;
    let (a, b) = (
        invoice_of("settle-a", &buyer, 6_000_000),
        invoice_of("settle-b", &buyer, 4_000_000),
    );
    let claim = app
        .submit_claim(submit_invoiced(
            "settle",
            &buyer,
            "SETTLE-1",
            vec![a.clone(), b.clone()],
        ))
        .await
        .unwrap()
        .into_inner()
        .claim
        .unwrap();
    assert_eq!(claim.state(), pb::ClaimState::PendingReview);
    let unset = pb::ApproveClaimRequest {
        verified_paid_amount: None,
        ..approve("settle-approve", &claim.claim_id, 0)
    };
    let status = app.approve_claim(unset.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status).as_deref(), Some("NO_VERIFIED_INVOICE"));
    assert_eq!(get_claim(&mut app, &claim.claim_id).await, claim);

    app.verify_claim_invoice(verify(
        "settle-va",
        &claim.claim_id,
        &a.invoice_number,
        true,
    ))
    .await
    .unwrap();
    let reviewed = app
        .verify_claim_invoice(verify(
            "settle-vb",
            &claim.claim_id,
            &b.invoice_number,
            false,
        ))
        .await
        .unwrap()
        .into_inner()
        .claim
        .unwrap();
    assert_eq!(fen_of(&reviewed.verified_invoiced_amount), 6_000_000);
    assert_eq!(fen_of(&reviewed.invoiced_amount), 10_000_000);
    let rejected = reviewed.invoices[1].verification.clone().unwrap();
    assert_eq!(rejected.state(), pb::InvoiceVerificationState::Rejected);
    assert!(!rejected.reviewer_id.is_empty() && rejected.verify_time.is_some());

    let status = app
        .approve_claim(approve("settle-mismatch", &claim.claim_id, 10_000_000))
        .await
        .unwrap_err();
    assert_eq!(reason(&status).as_deref(), Some("VERIFIED_AMOUNT_MISMATCH"));
    assert_eq!(metadata(&status)["verified_invoiced_amount"], "60000.00");

    let approved = app
        .approve_claim(unset)
        .await
        .unwrap()
        .into_inner()
        .claim
        .unwrap();
    assert_eq!(approved.state(), pb::ClaimState::Approved);
    assert_eq!(fen_of(&approved.verified_paid_amount), 6_000_000);
    assert_eq!(fen_of(&approved.approved_amount), 300_000);
    // Once approved, invoices are settled: neither added nor verified again.
    let status = app
        .verify_claim_invoice(verify(
            "settle-vb2",
            &claim.claim_id,
            &b.invoice_number,
            true,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&status).as_deref(), Some("TRANSITION_NOT_ALLOWED"));
}

#[tokio::test]
async fn adding_and_verifying_invoices_are_idempotent_by_request_id() {
    // Proves a replayed AddClaimInvoices or VerifyClaimInvoice answers the original response
    // and changes nothing more, and a request id reused for another request is refused.
    let (stack, _peers) = with_pool(POOL_2025_FEN, LONG_HOLD_SECONDS, &[]).await;
    let mut app = stack.app().await;
    let buyer = shandong(305);
    register(&mut app, &buyer).await;
    let claim = submitted(
        &mut app,
        "idem",
        &buyer,
        contract("IDEM-1", &seller(1), 10_000_000),
    )
    .await;
    let add = pb::AddClaimInvoicesRequest {
        request_id: "idem-add".into(),
        claim_id: claim.claim_id.clone(),
        invoices: vec![invoice_of("idem-a", &buyer, 2_000_000)],
    };
    let first = app
        .add_claim_invoices(add.clone())
        .await
        .unwrap()
        .into_inner();
    let again = app
        .add_claim_invoices(add.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, again);
    let db = stack.database(ServiceKind::Application).await;
    assert_eq!(count(&db, "claim_invoices").await, 1);
    let mut reused = add.clone();
    reused.invoices = vec![invoice_of("idem-b", &buyer, 1_000_000)];
    let status = app.add_claim_invoices(reused).await.unwrap_err();
    assert_eq!(reason(&status).as_deref(), Some("REQUEST_ID_REUSED"));

    let number = add.invoices[0].invoice_number.clone();
    let request = verify("idem-verify", &claim.claim_id, &number, true);
    let first = app
        .verify_claim_invoice(request.clone())
        .await
        .unwrap()
        .into_inner();
    let again = app
        .verify_claim_invoice(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, again);
    let revision = first.claim.as_ref().unwrap().revision;
    assert_eq!(
        get_claim(&mut app, &claim.claim_id).await.revision,
        revision
    );
    let status = app
        .verify_claim_invoice(verify("idem-verify", &claim.claim_id, &number, false))
        .await
        .unwrap_err();
    assert_eq!(reason(&status).as_deref(), Some("REQUEST_ID_REUSED"));

    // Badly shaped invoices are refused with field violations.
    let mut bad = invoice_of("idem-c", &buyer, 1_000_000);
    bad.invoice_number = "1234".into();
    let status = app
        .add_claim_invoices(pb::AddClaimInvoicesRequest {
            request_id: "idem-bad".into(),
            claim_id: claim.claim_id.clone(),
            invoices: vec![bad],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        subsidy_proto::status::violated_fields(&status),
        ["invoices[0].invoice_number"]
    );
}
