//! Requests and reads of the application service that tests make again and again.

use chrono::Datelike;
use subsidy_common::Uscc;
use subsidy_proto::application as pb;
use subsidy_proto::application::application_service_client::ApplicationServiceClient;
use subsidy_proto::google::r#type::Date;

use crate::auth::Channel;
use crate::money::cny;
use crate::wait::eventually;

/// The application client the kit's helpers take.
pub type App = ApplicationServiceClient<Channel>;

/// Registers `uscc` as an enterprise (idempotent by a request id derived from the code).
pub async fn register(app: &mut App, uscc: &Uscc) {
    crate::auth::named(uscc.as_str());
    app.register_enterprise(pb::RegisterEnterpriseRequest {
        request_id: format!("register-{uscc}"),
        uscc: uscc.to_string(),
        name: format!("Enterprise {uscc}"),
        contact_email: "ops@example.cn".into(),
        contact_phone: "+86 531 0000 0000".into(),
        registration_division_code: String::new(),
    })
    .await
    .expect("register an enterprise");
}

/// A compute contract for AI accelerators in Jinan signed on `signing_date`, which the 2025
/// compute-voucher policy finds eligible when the date lies in 2025.
pub fn contract_signed(
    number: &str,
    seller_uscc: &Uscc,
    total_fen: i64,
    signing_date: Date,
) -> pb::ComputeContract {
    pb::ComputeContract {
        contract_number: number.into(),
        seller_uscc: seller_uscc.to_string(),
        seller_name: "Jinan Intelligent Computing Center Co., Ltd.".into(),
        signing_date: Some(signing_date),
        total: cny(total_fen),
        compute_type: pb::ComputeType::AiAccelerator as i32,
        data_center_division_code: "370102".into(),
        data_center_name: "Jinan AI Computing Center".into(),
        related_party: Some(pb::RelatedPartyDeclaration {
            related: false,
            relationship_description: String::new(),
        }),
        scenario_description: "Training a medical imaging model.".into(),
        attachments: vec![pb::AttachmentDigest {
            file_name: "contract.pdf".into(),
            sha256_hex: "ab".repeat(32),
            size_bytes: 1024,
        }],
    }
}

/// A compute contract signed on 18 June 2025 that the 2025 compute-voucher policy (real or
/// scripted) finds eligible.
pub fn contract(number: &str, seller_uscc: &Uscc, total_fen: i64) -> pb::ComputeContract {
    contract_signed(
        number,
        seller_uscc,
        total_fen,
        Date {
            year: 2025,
            month: 6,
            day: 18,
        },
    )
}

/// A `SubmitClaim` request of `buyer` for `contract`.
pub fn submit(
    request_id: &str,
    buyer: &Uscc,
    contract: pb::ComputeContract,
) -> pb::SubmitClaimRequest {
    pb::SubmitClaimRequest {
        request_id: request_id.into(),
        enterprise_uscc: buyer.to_string(),
        invoices: Vec::new(),
        contract: Some(contract),
    }
}

/// Submits a claim and returns it.
pub async fn submitted(
    app: &mut App,
    request_id: &str,
    buyer: &Uscc,
    contract: pb::ComputeContract,
) -> pb::Claim {
    app.submit_claim(submit(request_id, buyer, contract))
        .await
        .expect("submit a claim")
        .into_inner()
        .claim
        .expect("the response carries the claim")
}

/// Reads a claim.
pub async fn get_claim(app: &mut App, claim_id: &str) -> pb::Claim {
    app.get_claim(pb::GetClaimRequest {
        claim_id: claim_id.into(),
    })
    .await
    .expect("read the claim")
    .into_inner()
    .claim
    .expect("the response carries the claim")
}

/// Waits until a claim reaches `state`.
pub async fn wait_claim_state(app: &App, claim_id: &str, state: pb::ClaimState) -> pb::Claim {
    eventually(&format!("{claim_id} to become {state:?}"), || {
        let mut app = app.clone();
        async move {
            let claim = get_claim(&mut app, claim_id).await;
            (claim.state() == state).then_some(claim)
        }
    })
    .await
}

/// The whole history of an application.
pub async fn history(app: &mut App, id: &str) -> Vec<pb::HistoryEntry> {
    app.list_application_history(pb::ListApplicationHistoryRequest {
        application_id: id.into(),
        page_size: 1000,
        page_token: String::new(),
    })
    .await
    .expect("read the history")
    .into_inner()
    .entries
}

/// An `ApproveClaim` request with `rating` (the reviewer is whoever sends it).
pub fn approve_rated(
    request_id: &str,
    claim_id: &str,
    verified_fen: i64,
    rating: pb::BenefitRating,
) -> pb::ApproveClaimRequest {
    pb::ApproveClaimRequest {
        request_id: request_id.into(),
        claim_id: claim_id.into(),
        verified_paid_amount: cny(verified_fen),
        benefit_rating: rating as i32,
        reviewer_id: String::new(),
        note: "invoices and payments verified".into(),
    }
}

/// An `ApproveClaim` request without a benefit rating (the standard rate), reviewed by
/// whoever sends it.
pub fn approve(request_id: &str, claim_id: &str, verified_fen: i64) -> pb::ApproveClaimRequest {
    approve_rated(
        request_id,
        claim_id,
        verified_fen,
        pb::BenefitRating::Unspecified,
    )
}

/// A 20-digit number of a fully digitalised VAT invoice, derived from `seed` (FNV-1a), so that
/// every claim of a test database gets invoices of its own.
pub fn invoice_number(seed: &str) -> String {
    let hash = seed.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:020}")
}

/// An invoice of `amount_fen` from `seller` to `buyer` issued on `issue_date`, numbered from
/// `seed` ([`invoice_number`]).
pub fn invoice(
    seed: &str,
    seller: &str,
    buyer: &str,
    amount_fen: i64,
    issue_date: Date,
) -> pb::Invoice {
    pb::Invoice {
        invoice_code: String::new(),
        invoice_number: invoice_number(seed),
        issue_date: Some(issue_date),
        amount: cny(amount_fen),
        seller_uscc: seller.into(),
        buyer_uscc: buyer.into(),
        verification: None,
    }
}

/// Gives a claim in PENDING_REVIEW VERIFIED invoices up to `verified_fen` (one invoice of the
/// missing amount, dated on the contract's signing date, never beyond the contract total) and
/// verifies it, with request ids derived from the claim. Does nothing when the claim is not in
/// review or its verified invoices already reach the amount; errors are left to the approval.
pub async fn verify_invoices_up_to(app: &App, claim_id: &str, verified_fen: i64) {
    let mut app = app.clone();
    let Ok(response) = app
        .get_claim(pb::GetClaimRequest {
            claim_id: claim_id.into(),
        })
        .await
    else {
        return;
    };
    let Some(claim) = response.into_inner().claim else {
        return;
    };
    let fen = |money: Option<&subsidy_proto::google::r#type::Money>| {
        money.map_or(0, |m| m.units * 100 + i64::from(m.nanos) / 10_000_000)
    };
    let verified = fen(claim.verified_invoiced_amount.as_ref());
    let Some(contract) = claim.contract.clone() else {
        return;
    };
    let room = fen(contract.total.as_ref()) - fen(claim.invoiced_amount.as_ref());
    let amount = (verified_fen - verified).min(room);
    if claim.state() != pb::ClaimState::PendingReview || amount <= 0 {
        return;
    }
    let seed = format!("{claim_id}-{}", claim.invoices.len());
    let invoice = invoice(
        &seed,
        &contract.seller_uscc,
        &claim.enterprise_uscc,
        amount,
        contract.signing_date.unwrap_or_else(today_shanghai),
    );
    let number = invoice.invoice_number.clone();
    let added = app
        .add_claim_invoices(pb::AddClaimInvoicesRequest {
            request_id: format!("add-invoice-{seed}"),
            claim_id: claim_id.into(),
            invoices: vec![invoice],
        })
        .await;
    if added.is_err() {
        return;
    }
    let _ = app
        .verify_claim_invoice(pb::VerifyClaimInvoiceRequest {
            request_id: format!("verify-invoice-{seed}"),
            claim_id: claim_id.into(),
            invoice_code: String::new(),
            invoice_number: number,
            state: pb::InvoiceVerificationState::Verified as i32,
            note: "checked against the tax bureau's platform".into(),
        })
        .await;
}

/// Approves a claim as a reviewer would: first gives it VERIFIED invoices up to the request's
/// `verified_paid_amount` ([`verify_invoices_up_to`]), then sends `request`.
pub async fn approve_claim(
    app: &App,
    request: pb::ApproveClaimRequest,
) -> Result<tonic::Response<pb::ApproveClaimResponse>, tonic::Status> {
    if let Some(amount) = &request.verified_paid_amount {
        let fen = amount.units * 100 + i64::from(amount.nanos) / 10_000_000;
        verify_invoices_up_to(app, &request.claim_id, fen).await;
    }
    app.clone().approve_claim(request).await
}

/// A `RejectClaim` request (payment not verified), reviewed by whoever sends it.
pub fn reject(request_id: &str, claim_id: &str) -> pb::RejectClaimRequest {
    pb::RejectClaimRequest {
        request_id: request_id.into(),
        claim_id: claim_id.into(),
        reason: pb::ClaimRejectionReason::PaymentNotVerified as i32,
        note: "invoices missing".into(),
        reviewer_id: String::new(),
    }
}

/// Today in Asia/Shanghai.
pub fn today_shanghai() -> Date {
    let today = chrono::Utc::now()
        .with_timezone(&subsidy_common::time::shanghai())
        .date_naive();
    Date {
        year: today.year(),
        month: today.month() as i32,
        day: today.day() as i32,
    }
}

/// The instant `seconds` from now.
pub fn in_seconds(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() + seconds,
        nanos: 0,
    }
}
