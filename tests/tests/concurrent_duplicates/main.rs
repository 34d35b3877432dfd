//! A client that retries while its first attempt is still running gets the first attempt's
//! answer: every mutating RPC of every service, sent [`COPIES`] times at once with one
//! `request_id` and one body, answers every copy alike and takes effect once (one `OK` row
//! of the audit trail, and the money moved once where it moves money).
//!
//! The RPCs are enumerated from the access table that `subsidy-proto` generates from the
//! descriptor set: a new mutating RPC fails [`every_mutating_rpc_is_covered`] until it is sent
//! here too.

use std::collections::BTreeSet;
use std::fmt::Debug;

use futures::future::join_all;
use subsidy_common::config::ServiceKind;
use subsidy_proto::access::{self, Role};
use subsidy_proto::application as pb;
use subsidy_proto::budget as bpb;
use subsidy_proto::budget::budget_service_client::BudgetServiceClient;
use subsidy_proto::google::r#type::Date;
use subsidy_proto::notification as npb;
use subsidy_proto::notification::notification_service_client::NotificationServiceClient;
use subsidy_proto::rules as rpb;
use subsidy_proto::rules::rules_service_client::RulesServiceClient;
use subsidy_proto::status::reason;
use subsidy_testkit::auth::{bearer, named, token};
use subsidy_testkit::requests::*;
use subsidy_testkit::rounds::*;
use subsidy_testkit::*;
use tonic::{Code, Request, Response, Status};

/// The compute-voucher pool the stack seeds.
const VOUCHER_POOL: &str = "compute-voucher-2025";

/// Copies of each call sent at once.
const COPIES: usize = 8;

const APPLICATION: &str = "/subsidy.application.v1.ApplicationService/";
const BUDGET: &str = "/subsidy.budget.v1.BudgetService/";
const RULES: &str = "/subsidy.rules.v1.RulesService/";
const NOTIFICATION: &str = "/subsidy.notification.v1.NotificationService/";

/// Every mutating RPC this file sends, by path.
const COVERED: [&str; 43] = [
    "/subsidy.application.v1.ApplicationService/AddClaimInvoices",
    "/subsidy.application.v1.ApplicationService/ApproveClaim",
    "/subsidy.application.v1.ApplicationService/CloseSelectionRound",
    "/subsidy.application.v1.ApplicationService/CreateSelectionRound",
    "/subsidy.application.v1.ApplicationService/DecideObjection",
    "/subsidy.application.v1.ApplicationService/FileObjection",
    "/subsidy.application.v1.ApplicationService/FinalizeSelectionRound",
    "/subsidy.application.v1.ApplicationService/ProvideClaimInformation",
    "/subsidy.application.v1.ApplicationService/RecordClaimDisbursement",
    "/subsidy.application.v1.ApplicationService/RecordProposalDisbursement",
    "/subsidy.application.v1.ApplicationService/RegisterEnterprise",
    "/subsidy.application.v1.ApplicationService/RejectClaim",
    "/subsidy.application.v1.ApplicationService/ReopenClaim",
    "/subsidy.application.v1.ApplicationService/RequestClaimInformation",
    "/subsidy.application.v1.ApplicationService/ScoreProposal",
    "/subsidy.application.v1.ApplicationService/SubmitClaim",
    "/subsidy.application.v1.ApplicationService/SubmitProposal",
    "/subsidy.application.v1.ApplicationService/UpdateEnterpriseContact",
    "/subsidy.application.v1.ApplicationService/UploadDocument",
    "/subsidy.application.v1.ApplicationService/VerifyClaimInvoice",
    "/subsidy.application.v1.ApplicationService/WithdrawClaim",
    "/subsidy.application.v1.ApplicationService/WithdrawProposal",
    "/subsidy.budget.v1.BudgetService/ClosePool",
    "/subsidy.budget.v1.BudgetService/Commit",
    "/subsidy.budget.v1.BudgetService/CreateCheckpoint",
    "/subsidy.budget.v1.BudgetService/CreatePool",
    "/subsidy.budget.v1.BudgetService/ExpireReservations",
    "/subsidy.budget.v1.BudgetService/ExtendReservation",
    "/subsidy.budget.v1.BudgetService/Release",
    "/subsidy.budget.v1.BudgetService/Reserve",
    "/subsidy.budget.v1.BudgetService/RevokeCommitment",
    "/subsidy.notification.v1.NotificationService/CreateSubscription",
    "/subsidy.notification.v1.NotificationService/DeleteSubscription",
    "/subsidy.notification.v1.NotificationService/PublishEvent",
    "/subsidy.notification.v1.NotificationService/PublishEvents",
    "/subsidy.notification.v1.NotificationService/RedeliverDeadLetters",
    "/subsidy.notification.v1.NotificationService/RedeliverEvent",
    "/subsidy.notification.v1.NotificationService/RotateSubscriptionSecret",
    "/subsidy.notification.v1.NotificationService/UpdateSubscription",
    "/subsidy.rules.v1.RulesService/PublishPolicy",
    "/subsidy.rules.v1.RulesService/RegisterProvider",
    "/subsidy.rules.v1.RulesService/ReplaceDenylist",
    "/subsidy.rules.v1.RulesService/UpdateProviderStatus",
];

/// The content of the document the claims test uploads.
const REPORT: &[u8] = b"the signed acceptance report";

/// The SHA-256 of [`REPORT`] (`printf 'the signed acceptance report' | sha256sum`).
const REPORT_SHA256: &str = "0233798bb5ff789c048af93b8a468f86d5b4600fba6d2e08e5d2d2b7f2210d86";

/// A closure making one copy of `client.method(request)`.
macro_rules! copy {
    ($client:expr, $method:ident, $request:expr) => {
        || {
            let mut client = $client.clone();
            let request = $request.clone();
            async move { client.$method(request).await }
        }
    };
}

/// What one copy got: the response, or the code and reason of its error.
type Outcome<T> = Result<T, (Code, Option<String>)>;

/// Sends [`COPIES`] copies of one call at once (each `call()` makes one copy) and returns what
/// each copy got.
async fn copies<T, F, Fut>(path: &str, call: F) -> Vec<Outcome<T>>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Response<T>, Status>>,
{
    let rule = access::rule(path).unwrap_or_else(|| panic!("{path} is not an RPC"));
    assert!(rule.mutating, "{path} is not mutating");
    join_all((0..COPIES).map(|_| call()))
        .await
        .into_iter()
        .map(|result| {
            result
                .map(Response::into_inner)
                .map_err(|status| (status.code(), reason(&status)))
        })
        .collect()
}

/// The one answer all copies got, failing when two copies were answered differently.
fn common<T: PartialEq + Debug>(path: &str, outcomes: Vec<Outcome<T>>) -> Outcome<T> {
    for (copy, outcome) in outcomes.iter().enumerate().skip(1) {
        assert_eq!(
            outcome, &outcomes[0],
            "{path}: copy {copy} was answered unlike copy 0"
        );
    }
    outcomes.into_iter().next().expect("at least one copy")
}

/// Sends [`COPIES`] copies of one call at once and returns their common answer.
async fn alike<T, F, Fut>(path: &str, call: F) -> Outcome<T>
where
    T: PartialEq + Debug,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Response<T>, Status>>,
{
    common(path, copies(path, call).await)
}

/// Like [`done`] for a call whose first answer differs from its replays in one documented
/// field (a signing secret shown only once; `duplicate` on a republished event):
/// `first_only` clears that field in a response and says whether it marked the first answer.
/// Exactly one copy gets the first answer, and the copies are alike apart from it.
async fn done_first_marked<T, F, Fut>(path: &str, call: F, first_only: fn(&mut T) -> bool) -> T
where
    T: PartialEq + Debug,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Response<T>, Status>>,
{
    let mut outcomes = copies(path, call).await;
    let mut firsts = 0;
    for response in outcomes.iter_mut().flatten() {
        if first_only(response) {
            firsts += 1;
        }
    }
    assert_eq!(firsts, 1, "{path}: copies given the first answer");
    common(path, outcomes).unwrap_or_else(|error| panic!("{path} failed: {error:?}"))
}

/// Clears a signing secret; whether there was one.
fn secret_shown(secret: &mut String) -> bool {
    !std::mem::take(secret).is_empty()
}

/// Like [`alike`] for a call that must succeed; returns its response.
async fn done<T, F, Fut>(path: &str, call: F) -> T
where
    T: PartialEq + Debug,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Response<T>, Status>>,
{
    alike(path, call)
        .await
        .unwrap_or_else(|error| panic!("{path} failed: {error:?}"))
}

/// Checks that `path` took effect once for `request_id`: one `OK` row in the audit trail of
/// `kind`'s database.
async fn once(stack: &Stack, kind: ServiceKind, path: &str, request_id: &str) {
    let db = stack.database(kind).await;
    let rows = query_rows(
        &db,
        "SELECT outcome FROM audit_log WHERE rpc = $1 AND request_id = $2",
        &[path, request_id],
    )
    .await;
    let ok = rows
        .iter()
        .filter(|row| sqlx::Row::get::<String, _>(*row, "outcome") == "OK")
        .count();
    assert_eq!(ok, 1, "{path} {request_id}: changes recorded");
}

fn app_path(method: &str) -> String {
    format!("{APPLICATION}{method}")
}

/// A stack whose notification service may deliver to plain-HTTP loopback endpoints, and whose
/// budget leaves expiring holds to the test's `ExpireReservations` and signs checkpoints with a
/// key of its own.
async fn stack() -> Stack {
    stack_with(&[], &[]).await
}

/// Like [`stack`], with the application settings `application` and the rules settings `rules`
/// (which win over the kit's).
async fn stack_with(application: &[(&str, &str)], rules: &[(&str, &str)]) -> Stack {
    let mut overrides = quick_application(application);
    overrides.insert(
        ServiceKind::Rules,
        rules
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect(),
    );
    let keys = tempfile::tempdir().expect("a key directory").keep();
    let key = subsidy_budget::checkpoint_key::ensure_dev_key(&keys).expect("a checkpoint key");
    overrides.insert(
        ServiceKind::Budget,
        vec![
            ("SUBSIDY_BUDGET_EXPIRY_INTERVAL_MS".into(), "3600000".into()),
            (
                "SUBSIDY_BUDGET_CHECKPOINT_KEY_FILE".into(),
                key.display().to_string(),
            ),
        ],
    );
    overrides.insert(ServiceKind::Notification, loopback_webhooks(&[]));
    subsidy_tests::spawn_with(overrides).await
}

#[test]
fn every_mutating_rpc_is_covered() {
    // Proves this file sends every mutating RPC the protos declare (and nothing else).
    let declared: BTreeSet<&str> = access::METHODS
        .iter()
        .filter(|rule| rule.mutating)
        .map(|rule| rule.path)
        .collect();
    let covered: BTreeSet<&str> = COVERED.into_iter().collect();
    assert_eq!(covered, declared);
}

#[tokio::test]
async fn claims_and_enterprises_answer_concurrent_duplicates_as_replays() {
    // Proves it for every mutating claim and enterprise RPC of the application.
    let stack = stack().await;
    let mut app = stack.app().await;
    let buyer = shandong(1);
    named(buyer.as_str());

    let register = pb::RegisterEnterpriseRequest {
        request_id: "dup-register".into(),
        uscc: buyer.to_string(),
        name: "Jinan Robotics".into(),
        contact_email: "ops@example.cn".into(),
        contact_phone: "+86 531 0000 0000".into(),
        registration_division_code: String::new(),
    };
    let path = app_path("RegisterEnterprise");
    done(&path, copy!(app, register_enterprise, register)).await;
    once(&stack, ServiceKind::Application, &path, "dup-register").await;

    let contact = pb::UpdateEnterpriseContactRequest {
        request_id: "dup-contact".into(),
        uscc: buyer.to_string(),
        contact_email: "finance@example.cn".into(),
        contact_phone: String::new(),
    };
    let path = app_path("UpdateEnterpriseContact");
    done(&path, copy!(app, update_enterprise_contact, contact)).await;
    once(&stack, ServiceKind::Application, &path, "dup-contact").await;

    // Submission: one claim, one hold.
    let submission = submit(
        "dup-submit",
        &buyer,
        contract("DUP-1", &seller(1), 100_000_000),
    );
    let path = app_path("SubmitClaim");
    let claim = done(&path, copy!(app, submit_claim, submission))
        .await
        .claim
        .expect("a claim");
    assert_eq!(claim.state(), pb::ClaimState::PendingReview);
    once(&stack, ServiceKind::Application, &path, "dup-submit").await;
    assert_eq!(
        stack
            .reservations(VOUCHER_POOL, &claim.claim_id)
            .await
            .len(),
        1
    );

    // Review: one invoice added and verified, one request for information, one document, one
    // answer.
    let signed = Date {
        year: 2025,
        month: 6,
        day: 18,
    };
    let bill = invoice(
        "dup-invoice",
        seller(1).as_str(),
        buyer.as_str(),
        80_000_000,
        signed,
    );
    let adding = pb::AddClaimInvoicesRequest {
        request_id: "dup-add-invoices".into(),
        claim_id: claim.claim_id.clone(),
        invoices: vec![bill.clone()],
    };
    let path = app_path("AddClaimInvoices");
    let invoiced = done(&path, copy!(app, add_claim_invoices, adding))
        .await
        .claim
        .expect("a claim");
    assert_eq!(invoiced.invoices.len(), 1);
    assert_eq!(fen_of(&invoiced.invoiced_amount), 80_000_000);
    once(&stack, ServiceKind::Application, &path, "dup-add-invoices").await;

    let verifying = pb::VerifyClaimInvoiceRequest {
        request_id: "dup-verify-invoice".into(),
        claim_id: claim.claim_id.clone(),
        invoice_code: String::new(),
        invoice_number: bill.invoice_number.clone(),
        state: pb::InvoiceVerificationState::Verified as i32,
        note: "checked against the tax bureau's platform".into(),
    };
    let path = app_path("VerifyClaimInvoice");
    let verified = done(&path, copy!(app, verify_claim_invoice, verifying))
        .await
        .claim
        .expect("a claim");
    assert_eq!(fen_of(&verified.verified_invoiced_amount), 80_000_000);
    once(
        &stack,
        ServiceKind::Application,
        &path,
        "dup-verify-invoice",
    )
    .await;

    let asking = pb::RequestClaimInformationRequest {
        request_id: "dup-ask".into(),
        claim_id: claim.claim_id.clone(),
        message: "Please send the signed acceptance report".into(),
    };
    let path = app_path("RequestClaimInformation");
    let asked = done(&path, copy!(app, request_claim_information, asking))
        .await
        .claim
        .expect("a claim");
    assert_eq!(asked.state(), pb::ClaimState::NeedsInformation);
    once(&stack, ServiceKind::Application, &path, "dup-ask").await;

    // UploadDocument is client streaming: each copy streams the same header and chunk.
    let upload = vec![
        pb::UploadDocumentRequest {
            part: Some(pb::upload_document_request::Part::Header(
                pb::UploadDocumentHeader {
                    request_id: "dup-upload".into(),
                    application_id: claim.claim_id.clone(),
                    kind: pb::DocumentKind::Other as i32,
                    file_name: "acceptance-report.pdf".into(),
                    media_type: "application/pdf".into(),
                    size_bytes: REPORT.len() as i64,
                    sha256_hex: REPORT_SHA256.into(),
                },
            )),
        },
        pb::UploadDocumentRequest {
            part: Some(pb::upload_document_request::Part::Chunk(REPORT.to_vec())),
        },
    ];
    let path = app_path("UploadDocument");
    let document = done(&path, || {
        let mut app = app.clone();
        let upload = upload.clone();
        async move { app.upload_document(futures::stream::iter(upload)).await }
    })
    .await
    .document
    .expect("a document");
    once(&stack, ServiceKind::Application, &path, "dup-upload").await;
    let documents = app
        .list_documents(pb::ListDocumentsRequest {
            application_id: claim.claim_id.clone(),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .expect("list the documents")
        .into_inner()
        .documents;
    assert_eq!(documents, vec![document.clone()]);

    let answering = pb::ProvideClaimInformationRequest {
        request_id: "dup-provide".into(),
        claim_id: claim.claim_id.clone(),
        message: "The signed acceptance report is attached.".into(),
        document_ids: vec![document.document_id.clone()],
    };
    let path = app_path("ProvideClaimInformation");
    let answered = done(&path, copy!(app, provide_claim_information, answering))
        .await
        .claim
        .expect("a claim");
    assert_eq!(answered.state(), pb::ClaimState::PendingReview);
    once(&stack, ServiceKind::Application, &path, "dup-provide").await;

    // Approval: one commit.
    let approval = approve("dup-approve", &claim.claim_id, 80_000_000);
    let path = app_path("ApproveClaim");
    let approved = done(&path, copy!(app, approve_claim, approval))
        .await
        .claim
        .expect("a claim");
    assert_eq!(approved.state(), pb::ClaimState::Approved);
    assert_eq!(fen_of(&approved.approved_amount), 4_000_000);
    once(&stack, ServiceKind::Application, &path, "dup-approve").await;
    let held = stack.reservations(VOUCHER_POOL, &claim.claim_id).await;
    assert_eq!(held.len(), 1);
    assert_eq!(fen_of(&held[0].committed_amount), 4_000_000);

    let payment = pb::RecordClaimDisbursementRequest {
        request_id: "dup-pay".into(),
        claim_id: claim.claim_id.clone(),
        payment_reference: "PAY-DUP-1".into(),
        payment_date: Some(today_shanghai()),
        amount: cny(4_000_000),
    };
    let path = app_path("RecordClaimDisbursement");
    done(&path, copy!(app, record_claim_disbursement, payment)).await;
    once(&stack, ServiceKind::Application, &path, "dup-pay").await;

    // Rejection and withdrawal, each of a claim in review: its hold released once.
    for (method, request_id, number) in [
        ("RejectClaim", "dup-reject", "DUP-2"),
        ("WithdrawClaim", "dup-withdraw", "DUP-3"),
    ] {
        let claim = submitted(
            &mut app,
            &format!("submit-{number}"),
            &buyer,
            contract(number, &seller(1), 10_000_000),
        )
        .await;
        let path = app_path(method);
        let ended = if method == "RejectClaim" {
            let rejection = reject(request_id, &claim.claim_id);
            done(&path, copy!(app, reject_claim, rejection)).await.claim
        } else {
            let withdrawal = pb::WithdrawClaimRequest {
                request_id: request_id.into(),
                claim_id: claim.claim_id.clone(),
                reason: "the project was cancelled".into(),
            };
            done(&path, copy!(app, withdraw_claim, withdrawal))
                .await
                .claim
        }
        .expect("a claim");
        assert!(
            matches!(
                ended.state(),
                pb::ClaimState::Rejected | pb::ClaimState::Withdrawn
            ),
            "{ended:?}"
        );
        once(&stack, ServiceKind::Application, &path, request_id).await;
    }
    stack.shutdown().await;
}

#[tokio::test]
async fn rounds_and_proposals_answer_concurrent_duplicates_as_replays() {
    // Proves it for every mutating round and proposal RPC of the application.
    let stack = stack().await;
    stack
        .create_pool(ROUND_POOL, 4_000_000_000, None, LONG_HOLD_SECONDS)
        .await;
    let mut app = stack.app().await;
    let (a, b) = (shandong(2), shandong(3));
    register(&mut app, &a).await;
    register(&mut app, &b).await;

    let opening = pb::CreateSelectionRoundRequest {
        request_id: "dup-round".into(),
        pool_id: ROUND_POOL.into(),
        title: "2025 benchmark projects".into(),
        submission_deadline_time: Some(in_seconds(DEADLINE_SECONDS)),
    };
    let path = app_path("CreateSelectionRound");
    let round = done(&path, copy!(app, create_selection_round, opening))
        .await
        .round
        .expect("a round");
    once(&stack, ServiceKind::Application, &path, "dup-round").await;

    let proposal = |request_id: &str, applicant: &subsidy_common::Uscc, title: &str| {
        pb::SubmitProposalRequest {
            request_id: request_id.into(),
            round_id: round.round_id.clone(),
            applicant_uscc: applicant.to_string(),
            category: pb::ProposalCategory::TrustedDataSpace as i32,
            title: title.into(),
            requested_amount: cny(500_000_000),
            summary: "A trusted data space for the province's manufacturers.".into(),
            attachments: Vec::new(),
        }
    };
    let path = app_path("SubmitProposal");
    let submission = proposal("dup-propose", &a, "space");
    let awarded = done(&path, copy!(app, submit_proposal, submission))
        .await
        .proposal
        .expect("a proposal");
    assert_eq!(awarded.state(), pb::ProposalState::Eligible);
    once(&stack, ServiceKind::Application, &path, "dup-propose").await;

    let other = propose(&mut app, &round.round_id, &b, "field", 300_000_000).await;
    let withdrawal = pb::WithdrawProposalRequest {
        request_id: "dup-withdraw-proposal".into(),
        proposal_id: other.proposal_id.clone(),
        reason: "merged into another project".into(),
    };
    let path = app_path("WithdrawProposal");
    done(&path, copy!(app, withdraw_proposal, withdrawal)).await;
    once(
        &stack,
        ServiceKind::Application,
        &path,
        "dup-withdraw-proposal",
    )
    .await;

    // Scoring, as an expert.
    let scoring = pb::ScoreProposalRequest {
        request_id: "dup-score".into(),
        proposal_id: awarded.proposal_id.clone(),
        expert_id: "e1".into(),
        expert_organization_uscc: shandong(60).to_string(),
        score: 80,
        comment: String::new(),
    };
    let expert = token("expert-e1", &[Role::Expert], &[], Some("e1"));
    let path = app_path("ScoreProposal");
    let scored = done(&path, || {
        let mut request = Request::new(scoring.clone());
        request
            .metadata_mut()
            .insert("authorization", bearer(&expert));
        let mut app = app.clone();
        async move { app.score_proposal(request).await }
    })
    .await
    .proposal
    .expect("a proposal");
    assert_eq!((scored.score_total, scored.score_count), (80, 1));
    once(&stack, ServiceKind::Application, &path, "dup-score").await;

    let closing = pb::CloseSelectionRoundRequest {
        request_id: "dup-close".into(),
        round_id: round.round_id.clone(),
    };
    let path = app_path("CloseSelectionRound");
    done(&path, copy!(app, close_selection_round, closing)).await;
    once(&stack, ServiceKind::Application, &path, "dup-close").await;

    // Finalisation: one award, one reservation, committed once.
    let finalizing = finalize("dup-finalize", &round.round_id);
    let path = app_path("FinalizeSelectionRound");
    let result = done(&path, copy!(app, finalize_selection_round, finalizing)).await;
    assert_eq!(result.awards.len(), 1);
    once(&stack, ServiceKind::Application, &path, "dup-finalize").await;
    let held = stack.reservations(ROUND_POOL, &awarded.proposal_id).await;
    assert_eq!(held.len(), 1);
    assert_eq!(fen_of(&held[0].committed_amount), 500_000_000);

    let payment = pb::RecordProposalDisbursementRequest {
        request_id: "dup-pay-proposal".into(),
        proposal_id: awarded.proposal_id.clone(),
        payment_reference: "PAY-DI-DUP".into(),
        payment_date: Some(today_shanghai()),
        amount: cny(500_000_000),
    };
    let path = app_path("RecordProposalDisbursement");
    done(&path, copy!(app, record_proposal_disbursement, payment)).await;
    once(&stack, ServiceKind::Application, &path, "dup-pay-proposal").await;
    stack.shutdown().await;
}

#[tokio::test]
async fn the_budget_answers_concurrent_duplicates_as_replays() {
    // Proves it for every mutating RPC of the budget: one pool, one hold, one commit, one
    // release, one extension, one revocation, one closing, each in the ledger once.
    let stack = stack().await;
    let mut budget: BudgetServiceClient<Channel> = stack.budget().await;
    let path = |method: &str| format!("{BUDGET}{method}");
    let who = shandong(4).to_string();

    let creation = bpb::CreatePoolRequest {
        request_id: "dup-pool".into(),
        pool_id: "dup-pool".into(),
        display_name: "Concurrent duplicates".into(),
        total: cny(100_000_000),
        beneficiary_cap: None,
        reservation_cap: None,
        default_hold_seconds: 3600,
    };
    done(&path("CreatePool"), copy!(budget, create_pool, creation)).await;
    once(&stack, ServiceKind::Budget, &path("CreatePool"), "dup-pool").await;

    let hold = |request_id: &str, reference: &str, seconds: i64| bpb::ReserveRequest {
        request_id: request_id.into(),
        pool_id: "dup-pool".into(),
        beneficiary_uscc: who.clone(),
        amount: cny(1_000_000),
        reference: reference.into(),
        hold_seconds: seconds,
    };
    let reserving = hold("dup-reserve", "ref-1", 3600);
    let first = done(&path("Reserve"), copy!(budget, reserve, reserving))
        .await
        .reservation
        .expect("a reservation");
    once(&stack, ServiceKind::Budget, &path("Reserve"), "dup-reserve").await;
    assert_eq!(stack.reservations("dup-pool", "ref-1").await.len(), 1);

    let committing = bpb::CommitRequest {
        request_id: "dup-commit".into(),
        reservation_id: first.reservation_id.clone(),
        amount: cny(600_000),
    };
    done(&path("Commit"), copy!(budget, commit, committing)).await;
    once(&stack, ServiceKind::Budget, &path("Commit"), "dup-commit").await;

    let second = budget
        .reserve(hold("reserve-2", "ref-2", 3600))
        .await
        .expect("a second hold")
        .into_inner()
        .reservation
        .expect("a reservation");
    let releasing = bpb::ReleaseRequest {
        request_id: "dup-release".into(),
        reservation_id: second.reservation_id.clone(),
        reason: "withdrawn".into(),
    };
    done(&path("Release"), copy!(budget, release, releasing)).await;
    once(&stack, ServiceKind::Budget, &path("Release"), "dup-release").await;

    // A hold of one second, due when the copies arrive.
    budget
        .reserve(hold("reserve-3", "ref-3", 1))
        .await
        .expect("a short hold");
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let expiring = bpb::ExpireReservationsRequest {
        limit: 100,
        request_id: "dup-expire".into(),
    };
    let expired = done(
        &path("ExpireReservations"),
        copy!(budget, expire_reservations, expiring),
    )
    .await;
    assert_eq!(expired.expired_count, 1);
    once(
        &stack,
        ServiceKind::Budget,
        &path("ExpireReservations"),
        "dup-expire",
    )
    .await;

    let pool = stack.pool("dup-pool").await;
    assert_eq!(fen_of(&pool.committed), 600_000);
    assert_eq!(fen_of(&pool.held), 0);

    let fourth = budget
        .reserve(hold("reserve-4", "ref-4", 3600))
        .await
        .expect("a fourth hold")
        .into_inner()
        .reservation
        .expect("a reservation");
    let extending = bpb::ExtendReservationRequest {
        request_id: "dup-extend".into(),
        reservation_id: fourth.reservation_id.clone(),
        hold_seconds: 7200,
    };
    done(
        &path("ExtendReservation"),
        copy!(budget, extend_reservation, extending),
    )
    .await;
    once(
        &stack,
        ServiceKind::Budget,
        &path("ExtendReservation"),
        "dup-extend",
    )
    .await;
    let revoking = bpb::RevokeCommitmentRequest {
        request_id: "dup-revoke".into(),
        reservation_id: first.reservation_id.clone(),
        reason: "objection upheld".into(),
    };
    done(
        &path("RevokeCommitment"),
        copy!(budget, revoke_commitment, revoking),
    )
    .await;
    once(
        &stack,
        ServiceKind::Budget,
        &path("RevokeCommitment"),
        "dup-revoke",
    )
    .await;
    let pool = stack.pool("dup-pool").await;
    assert_eq!(fen_of(&pool.committed), 0);
    assert_eq!(fen_of(&pool.held), 1_000_000);

    let signing = bpb::CreateCheckpointRequest {
        request_id: "dup-checkpoint".into(),
        pool_id: "dup-pool".into(),
    };
    let signed = done(
        &path("CreateCheckpoint"),
        copy!(budget, create_checkpoint, signing),
    )
    .await;
    assert!(signed.created, "{signed:?}");
    once(
        &stack,
        ServiceKind::Budget,
        &path("CreateCheckpoint"),
        "dup-checkpoint",
    )
    .await;

    let closing = bpb::ClosePoolRequest {
        request_id: "dup-close-pool".into(),
        pool_id: "dup-pool".into(),
        reason: "programme over".into(),
    };
    done(&path("ClosePool"), copy!(budget, close_pool, closing)).await;
    once(
        &stack,
        ServiceKind::Budget,
        &path("ClosePool"),
        "dup-close-pool",
    )
    .await;
    let verified = budget
        .verify_ledger(bpb::VerifyLedgerRequest {})
        .await
        .expect("verify the ledger")
        .into_inner();
    assert!(verified.intact, "{verified:?}");
    stack.shutdown().await;
}

#[tokio::test]
async fn rules_and_notification_answer_concurrent_duplicates_as_replays() {
    // Proves it for every mutating RPC of the rules and notification services.
    let stack = stack().await;
    let rules = RulesServiceClient::new(stack.channel(ServiceKind::Rules).await);
    let path = |service: &str, method: &str| format!("{service}{method}");

    let mut draft = subsidy_rules::policy_file::shipped()
        .into_iter()
        .find(|draft| draft.program() == rpb::Program::ComputeVoucher)
        .expect("a shipped compute-voucher policy");
    draft.version = "2025.9".into();
    let publishing = rpb::PublishPolicyRequest {
        request_id: "dup-policy".into(),
        policy: Some(draft),
        validate_only: false,
    };
    let published = done(
        &path(RULES, "PublishPolicy"),
        copy!(rules, publish_policy, publishing),
    )
    .await;
    assert!(published.policy.is_some());
    once(
        &stack,
        ServiceKind::Rules,
        &path(RULES, "PublishPolicy"),
        "dup-policy",
    )
    .await;

    let denylist = rpb::ReplaceDenylistRequest {
        request_id: "dup-denylist".into(),
        entries: vec![rpb::DenylistEntry {
            uscc: shandong(40).to_string(),
            reason: "serious dishonesty".into(),
            source: "信用中国 (Credit China)".into(),
            listed_date: Some(subsidy_proto::google::r#type::Date {
                year: 2025,
                month: 3,
                day: 1,
            }),
        }],
    };
    done(
        &path(RULES, "ReplaceDenylist"),
        copy!(rules, replace_denylist, denylist),
    )
    .await;
    once(
        &stack,
        ServiceKind::Rules,
        &path(RULES, "ReplaceDenylist"),
        "dup-denylist",
    )
    .await;

    let registration = rpb::RegisterProviderRequest {
        request_id: "dup-provider".into(),
        uscc: shandong(41).to_string(),
        name: "济南智算有限公司".into(),
        effective_date: Some(subsidy_proto::google::r#type::Date {
            year: 2025,
            month: 1,
            day: 1,
        }),
        reason: "admitted".into(),
        data_centers: vec![rpb::DataCenter {
            name: "济南智算中心".into(),
            division_code: "370102".into(),
            capacity_pflops: "100".into(),
            status: rpb::DataCenterStatus::InService as i32,
        }],
    };
    done(
        &path(RULES, "RegisterProvider"),
        copy!(rules, register_provider, registration),
    )
    .await;
    once(
        &stack,
        ServiceKind::Rules,
        &path(RULES, "RegisterProvider"),
        "dup-provider",
    )
    .await;
    let suspension = rpb::UpdateProviderStatusRequest {
        request_id: "dup-provider-status".into(),
        uscc: shandong(41).to_string(),
        status: rpb::ProviderStatus::Suspended as i32,
        effective_date: Some(subsidy_proto::google::r#type::Date {
            year: 2025,
            month: 6,
            day: 1,
        }),
        reason: "inspection".into(),
    };
    done(
        &path(RULES, "UpdateProviderStatus"),
        copy!(rules, update_provider_status, suspension),
    )
    .await;
    once(
        &stack,
        ServiceKind::Rules,
        &path(RULES, "UpdateProviderStatus"),
        "dup-provider-status",
    )
    .await;

    // Notification: a subscription to an endpoint that refuses connections.
    let notes: NotificationServiceClient<Channel> = stack.notification().await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("an address").port()
    };
    let creation = npb::CreateSubscriptionRequest {
        request_id: "dup-subscribe".into(),
        endpoint_url: format!("http://127.0.0.1:{closed}/hooks"),
        description: "agency".into(),
        ..npb::CreateSubscriptionRequest::default()
    };
    let created = done_first_marked(
        &path(NOTIFICATION, "CreateSubscription"),
        copy!(notes, create_subscription, creation),
        |response| secret_shown(&mut response.signing_secret),
    )
    .await;
    let subscription = created.subscription.expect("a subscription");
    once(
        &stack,
        ServiceKind::Notification,
        &path(NOTIFICATION, "CreateSubscription"),
        "dup-subscribe",
    )
    .await;

    let update = npb::UpdateSubscriptionRequest {
        request_id: "dup-update".into(),
        subscription_id: subscription.subscription_id.clone(),
        subscription: Some(npb::Subscription {
            description: "agency, renamed".into(),
            ..npb::Subscription::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["description".into()],
        }),
    };
    done(
        &path(NOTIFICATION, "UpdateSubscription"),
        copy!(notes, update_subscription, update),
    )
    .await;
    once(
        &stack,
        ServiceKind::Notification,
        &path(NOTIFICATION, "UpdateSubscription"),
        "dup-update",
    )
    .await;

    let rotation = npb::RotateSubscriptionSecretRequest {
        request_id: "dup-rotate".into(),
        subscription_id: subscription.subscription_id.clone(),
        grace_period_seconds: 60,
    };
    done_first_marked(
        &path(NOTIFICATION, "RotateSubscriptionSecret"),
        copy!(notes, rotate_subscription_secret, rotation),
        |response| secret_shown(&mut response.signing_secret),
    )
    .await;
    once(
        &stack,
        ServiceKind::Notification,
        &path(NOTIFICATION, "RotateSubscriptionSecret"),
        "dup-rotate",
    )
    .await;

    // An event, published by eight copies at once: one event, one delivery.
    let event = npb::Event {
        event_id: "evt-dup".into(),
        r#type: npb::EventType::ClaimSubmitted as i32,
        application_id: "claim-dup".into(),
        enterprise_uscc: shandong(1).to_string(),
        program: npb::Program::ComputeVoucher as i32,
        amount: cny(1_234_567),
        occur_time: Some(prost_types::Timestamp {
            seconds: 1_767_225_600,
            nanos: 0,
        }),
        source: "subsidy.application".into(),
        ..npb::Event::default()
    };
    let publishing = npb::PublishEventRequest { event: Some(event) };
    done_first_marked(
        &path(NOTIFICATION, "PublishEvent"),
        copy!(notes, publish_event, publishing),
        |response| !std::mem::replace(&mut response.duplicate, false),
    )
    .await;
    let db = stack.database(ServiceKind::Notification).await;
    let events = query_rows(
        &db,
        "SELECT event_id FROM events WHERE event_id = $1",
        &["evt-dup"],
    )
    .await;
    assert_eq!(events.len(), 1);

    // Two events published together by eight copies at once, one of them known already:
    // each stored once, with one delivery.
    let second = npb::Event {
        event_id: "evt-dup-2".into(),
        application_id: "claim-dup-2".into(),
        ..publishing.event.clone().unwrap()
    };
    let batch = npb::PublishEventsRequest {
        events: vec![publishing.event.clone().unwrap(), second],
    };
    let results = done_first_marked(
        &path(NOTIFICATION, "PublishEvents"),
        copy!(notes, publish_events, batch),
        |response| !std::mem::replace(&mut response.results[1].duplicate, false),
    )
    .await;
    assert!(results.results[0].duplicate, "the event stored before");
    let events = query_rows(
        &db,
        "SELECT event_id FROM events WHERE event_id IN ($1, $2)",
        &["evt-dup", "evt-dup-2"],
    )
    .await;
    assert_eq!(events.len(), 2);
    let deliveries = |event_id: &'static str| {
        let db = &db;
        async move {
            query_rows(
                db,
                "SELECT delivery_id FROM deliveries WHERE event_id = $1",
                &[event_id],
            )
            .await
            .len()
        }
    };
    assert_eq!(
        deliveries("evt-dup-2").await,
        deliveries("evt-dup").await,
        "scheduled once, as the event published alone"
    );

    let redelivery = npb::RedeliverEventRequest {
        request_id: "dup-redeliver".into(),
        event_id: "evt-dup".into(),
        subscription_id: subscription.subscription_id.clone(),
    };
    done(
        &path(NOTIFICATION, "RedeliverEvent"),
        copy!(notes, redeliver_event, redelivery),
    )
    .await;
    once(
        &stack,
        ServiceKind::Notification,
        &path(NOTIFICATION, "RedeliverEvent"),
        "dup-redeliver",
    )
    .await;

    let dead_letters = npb::RedeliverDeadLettersRequest {
        request_id: "dup-dead".into(),
        subscription_id: subscription.subscription_id.clone(),
    };
    done(
        &path(NOTIFICATION, "RedeliverDeadLetters"),
        copy!(notes, redeliver_dead_letters, dead_letters),
    )
    .await;
    once(
        &stack,
        ServiceKind::Notification,
        &path(NOTIFICATION, "RedeliverDeadLetters"),
        "dup-dead",
    )
    .await;

    let deletion = npb::DeleteSubscriptionRequest {
        request_id: "dup-delete".into(),
        subscription_id: subscription.subscription_id.clone(),
    };
    done(
        &path(NOTIFICATION, "DeleteSubscription"),
        copy!(notes, delete_subscription, deletion),
    )
    .await;
    once(
        &stack,
        ServiceKind::Notification,
        &path(NOTIFICATION, "DeleteSubscription"),
        "dup-delete",
    )
    .await;
    stack.shutdown().await;
}

#[tokio::test]
async fn one_request_id_with_two_bodies_in_flight_takes_effect_for_one_body_only() {
    // Proves that a different body under a request id in flight is REQUEST_ID_REUSED, not a
    // second effect and not a refusal of its own: half the copies of a submission carry
    // another contract, and exactly one body wins.
    let stack = stack().await;
    let mut app = stack.app().await;
    let buyer = shandong(5);
    register(&mut app, &buyer).await;
    let bodies = [
        submit(
            "two-bodies",
            &buyer,
            contract("TWO-1", &seller(1), 10_000_000),
        ),
        submit(
            "two-bodies",
            &buyer,
            contract("TWO-2", &seller(1), 10_000_000),
        ),
    ];
    let outcomes: Vec<Outcome<pb::SubmitClaimResponse>> = join_all((0..COPIES).map(|copy| {
        let mut app = app.clone();
        let request = bodies[copy % 2].clone();
        async move { app.submit_claim(request).await }
    }))
    .await
    .into_iter()
    .map(|result| {
        result
            .map(Response::into_inner)
            .map_err(|status| (status.code(), reason(&status)))
    })
    .collect();
    let (won, lost): (Vec<_>, Vec<_>) = outcomes
        .into_iter()
        .enumerate()
        .partition(|(_, outcome)| outcome.is_ok());
    let winner = won[0].0 % 2;
    assert!(
        won.iter().all(|(copy, _)| copy % 2 == winner),
        "only one body takes effect"
    );
    assert_eq!(won.len(), COPIES / 2);
    for (_, outcome) in &won[1..] {
        assert_eq!(outcome, &won[0].1);
    }
    for (_, outcome) in lost {
        assert_eq!(
            outcome.unwrap_err(),
            (Code::AlreadyExists, Some("REQUEST_ID_REUSED".to_owned()))
        );
    }
    let db = stack.database(ServiceKind::Application).await;
    let claims = query_rows(
        &db,
        "SELECT claim_id FROM claims WHERE enterprise_uscc = $1",
        &[buyer.as_str()],
    )
    .await;
    assert_eq!(claims.len(), 1);
    stack.shutdown().await;
}

mod review;
