//! Identity and access across the four services: every RPC against every kind of caller, the
//! tokens that must be refused, certificates of a foreign CA, the rate limit, tenants kept
//! apart, request ids scoped to their caller, the audit trail, and the runtime database role.

use http::uri::PathAndQuery;
use subsidy_common::auth::dev::DEV_ISSUER;
use subsidy_common::auth::token::{Claims, SigningKey};
use subsidy_common::config::ServiceKind;
use subsidy_common::tls::{Connector, TlsFiles, TlsState};
use subsidy_proto::access::{self, MethodAccess, Role, Service};
use subsidy_proto::application as pb;
use subsidy_proto::audit as apb;
use subsidy_proto::audit::audit_service_client::AuditServiceClient;
use subsidy_proto::budget as bpb;
use subsidy_proto::budget::budget_service_client::BudgetServiceClient;
use subsidy_proto::notification as npb;
use subsidy_proto::notification::notification_service_client::NotificationServiceClient;
use subsidy_proto::status::reason;
use subsidy_testkit::auth::{self, Credentials, Transport};
use subsidy_testkit::requests::{self, App, contract, register};
use subsidy_testkit::{Channel, Stack, cny, seller, shandong};
use tonic::Code;

/// The service that serves `rule`'s method.
fn served_by(rule: &MethodAccess) -> Option<ServiceKind> {
    let name = rule.service_name();
    ServiceKind::ALL
        .into_iter()
        .find(|kind| kind.grpc_name() == name)
}

/// Calls `rule`'s method with an empty request on `channel` (with `token`, if any) and
/// returns the status (OK when it succeeded).
async fn call(channel: Channel, rule: &'static MethodAccess, token: Option<&str>) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel);
    if let Err(error) = grpc.ready().await {
        return tonic::Status::unavailable(error.to_string());
    }
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let mut request = tonic::Request::new(());
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", auth::bearer(token));
    }
    let path = PathAndQuery::from_static(rule.path);
    let result = if rule.server_streaming {
        grpc.server_streaming(request, path, codec)
            .await
            .map(|_| ())
    } else {
        grpc.unary(request, path, codec).await.map(|_| ())
    };
    result.err().unwrap_or_else(|| tonic::Status::ok(""))
}

/// Whether the access layer refused the call (as opposed to the service answering it).
fn refused_by_the_layer(status: &tonic::Status) -> bool {
    status.code() == Code::Unauthenticated
        || (status.code() == Code::PermissionDenied
            && reason(status).as_deref() == Some("PERMISSION_DENIED"))
}

fn role_token(role: Role) -> String {
    auth::token(
        &format!("matrix-{}", role.claim_name()),
        &[role],
        &[shandong(900).to_string()],
        Some("matrix-expert"),
    )
}

#[tokio::test]
async fn every_rpc_admits_exactly_the_roles_and_services_its_declaration_names() {
    // Proves the RPC × caller matrix: every method of every service (from the compiled
    // declarations), called without credentials, with a token of each role, and with each
    // service's certificate, is admitted exactly where the proto declares it;
    // UNAUTHENTICATED without credentials and PERMISSION_DENIED elsewhere.
    let stack = subsidy_tests::spawn().await;
    let mut checked = 0;
    for rule in access::METHODS {
        let url = match served_by(rule) {
            Some(kind) => stack.urls[&kind].clone(),
            // The audit listing is served by every process: check it on the budget's.
            None => stack.urls[&ServiceKind::Budget].clone(),
        };
        let anonymous = auth::connect_with(&url, Transport::Anonymous, Credentials::None).await;
        let status = call(anonymous.clone(), rule, None).await;
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{} without credentials: {status:?}",
            rule.path
        );
        for role in Role::ALL {
            let status = call(anonymous.clone(), rule, Some(&role_token(role))).await;
            let admitted = rule.roles.contains(&role);
            assert_eq!(
                !refused_by_the_layer(&status),
                admitted,
                "{} as {}: {status:?}",
                rule.path,
                role.claim_name()
            );
            if !admitted {
                assert_eq!(status.code(), Code::PermissionDenied, "{}", rule.path);
            }
            checked += 1;
        }
        for service in Service::ALL {
            let channel =
                auth::connect_with(&url, Transport::Service(service), Credentials::None).await;
            let status = call(channel, rule, None).await;
            let admitted = rule.services.contains(&service);
            assert_eq!(
                !refused_by_the_layer(&status),
                admitted,
                "{} as the {} service: {status:?}",
                rule.path,
                service.short_name()
            );
            checked += 1;
        }
    }
    assert!(checked >= 60 * 10, "{checked} calls checked");
    stack.shutdown().await;
}

/// The budget's ListPools called with `token` over server-authenticated TLS.
async fn list_pools_with(stack: &Stack, token: &str) -> tonic::Status {
    let channel = stack
        .channel_as(ServiceKind::Budget, Transport::Anonymous, Credentials::None)
        .await;
    let rule = access::rule("/subsidy.budget.v1.BudgetService/ListPools").expect("declared");
    call(channel, rule, Some(token)).await
}

fn base64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn tokens_that_are_expired_early_foreign_unsigned_or_forged_are_unauthenticated() {
    // Proves the token checks: a good auditor token is admitted; the same token expired, not
    // yet valid, for another audience or issuer, without signature (alg=none), signed with
    // HS256 using the public key as the secret, signed by an unknown key, or naming an unknown
    // kid is UNAUTHENTICATED.
    let stack = subsidy_tests::spawn().await;
    let now = subsidy_common::auth::token::now_seconds();
    let good = subsidy_common::auth::dev::claims("auditor-1", &[Role::Auditor], &[], None);
    assert_eq!(
        list_pools_with(&stack, &auth::token_with(&good))
            .await
            .code(),
        Code::Ok
    );
    let variants: Vec<(&str, Claims)> = vec![
        (
            "expired",
            Claims {
                exp: now - 120,
                ..good.clone()
            },
        ),
        (
            "not yet valid",
            Claims {
                nbf: Some(now + 600),
                ..good.clone()
            },
        ),
        (
            "another audience",
            Claims {
                aud: "another-system".into(),
                ..good.clone()
            },
        ),
        (
            "another issuer",
            Claims {
                iss: "https://idp.example.cn".into(),
                ..good.clone()
            },
        ),
    ];
    for (what, claims) in variants {
        let status = list_pools_with(&stack, &auth::token_with(&claims)).await;
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    }
    let payload = base64url(&serde_json::to_vec(&good).unwrap());
    let unsigned = format!(
        "{}.{payload}.",
        base64url(br#"{"alg":"none","typ":"JWT","kid":"subsidy-dev-1"}"#)
    );
    let public_jwk = serde_json::to_vec(&auth::files().signing.public_jwk()).unwrap();
    let mut hs_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs_header.kid = Some(subsidy_common::auth::dev::DEV_KID.into());
    let hs256 = jsonwebtoken::encode(
        &hs_header,
        &good,
        &jsonwebtoken::EncodingKey::from_secret(&public_jwk).unwrap(),
    )
    .unwrap();
    let stranger_pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let same_kid =
        SigningKey::from_pem(stranger_pem.as_bytes(), subsidy_common::auth::dev::DEV_KID)
            .unwrap()
            .mint(&good);
    let unknown_kid = SigningKey::from_pem(stranger_pem.as_bytes(), "kid-nobody-knows")
        .unwrap()
        .mint(&good);
    for (what, token) in [
        ("alg=none", unsigned),
        ("HS256 with the public key", hs256),
        ("signed by another key", same_kid),
        ("unknown kid", unknown_kid),
        ("not a token", "abc.def".to_owned()),
    ] {
        let status = list_pools_with(&stack, &token).await;
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    }
    assert_eq!(good.iss, DEV_ISSUER);
    stack.shutdown().await;
}

#[tokio::test]
async fn a_certificate_of_another_ca_cannot_call_and_a_service_not_named_is_denied() {
    // Proves mutual TLS: a client certificate claiming to be the application but issued by a
    // CA the services do not trust is refused at the handshake (the call never reaches the
    // budget), and the rules service's genuine certificate may not call budget's Reserve.
    let stack = subsidy_tests::spawn().await;
    let dir = std::env::temp_dir().join(format!("subsidy-foreign-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let foreign = subsidy_common::auth::dev::certificate_authority("foreign CA").unwrap();
    let (chain, key) = subsidy_common::auth::dev::leaf(
        &foreign,
        "application",
        &["localhost".into()],
        &[Service::Application.spiffe_id()],
    )
    .unwrap();
    std::fs::write(dir.join("app.crt"), chain).unwrap();
    std::fs::write(dir.join("app.key"), key).unwrap();
    let state = TlsState::load(TlsFiles {
        cert: dir.join("app.crt"),
        key: dir.join("app.key"),
        ca: auth::files().dev.ca(),
        agency_ca: None,
    })
    .unwrap();
    let reserve = access::rule("/subsidy.budget.v1.BudgetService/Reserve").expect("declared");
    let endpoint =
        tonic::transport::Endpoint::from_shared(stack.urls[&ServiceKind::Budget].clone()).unwrap();
    match endpoint.connect_with_connector(Connector::new(state)).await {
        Err(_) => {}
        Ok(channel) => {
            let channel =
                tonic::service::interceptor::InterceptedService::new(channel, Credentials::None);
            let status = call(channel, reserve, None).await;
            assert!(
                matches!(
                    status.code(),
                    Code::Unavailable | Code::Unknown | Code::Internal
                ),
                "a foreign certificate must not get an answer from the budget: {status:?}"
            );
        }
    }
    let rules = stack
        .channel_as(
            ServiceKind::Budget,
            Transport::Service(Service::Rules),
            Credentials::None,
        )
        .await;
    let status = call(rules, reserve, None).await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(reason(&status).as_deref(), Some("PERMISSION_DENIED"));
    stack.shutdown().await;
}

#[tokio::test]
async fn the_rate_limit_refuses_the_change_after_the_burst_with_a_retry_delay() {
    // Proves the per-caller limit of mutating calls: with a burst of 3 at 1 per second, three
    // changes are admitted and the fourth is RESOURCE_EXHAUSTED/RATE_LIMITED with a RetryInfo;
    // reads are not limited, and another caller has its own budget of changes.
    let mut overrides = subsidy_testkit::Overrides::new();
    overrides.insert(
        ServiceKind::Application,
        vec![
            ("SUBSIDY_AUTH_RATE_LIMIT_PER_SECOND".into(), "1".into()),
            ("SUBSIDY_AUTH_RATE_LIMIT_BURST".into(), "3".into()),
        ],
    );
    let stack = subsidy_tests::spawn_with(overrides).await;
    let admin = auth::token("limited-admin", &[Role::Admin], &[], None);
    let channel = stack
        .channel_as(
            ServiceKind::Application,
            Transport::Anonymous,
            Credentials::Token(admin.into()),
        )
        .await;
    let mut app = App::new(channel);
    for n in 0..3 {
        register(&mut app, &shandong(910 + n)).await;
    }
    let refused = app
        .register_enterprise(pb::RegisterEnterpriseRequest {
            request_id: "one-too-many".into(),
            uscc: shandong(913).to_string(),
            name: "Fourth".into(),
            contact_email: "ops@example.cn".into(),
            contact_phone: String::new(),
            registration_division_code: String::new(),
        })
        .await
        .expect_err("the fourth change in a second is refused");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(reason(&refused).as_deref(), Some("RATE_LIMITED"));
    use tonic_types::StatusExt;
    let retry = refused
        .get_details_retry_info()
        .expect("a RetryInfo says when to retry");
    assert!(retry.retry_delay.is_some_and(|delay| !delay.is_zero()));
    app.list_enterprises(pb::ListEnterprisesRequest::default())
        .await
        .expect("reads are not limited");
    let mut other = stack.app().await;
    register(&mut other, &shandong(914)).await;
    stack.shutdown().await;
}

async fn submit(
    app: &mut App,
    request_id: &str,
    buyer: &subsidy_common::Uscc,
    number: &str,
) -> Result<pb::Claim, tonic::Status> {
    app.submit_claim(pb::SubmitClaimRequest {
        request_id: request_id.into(),
        enterprise_uscc: buyer.to_string(),
        invoices: Vec::new(),
        contract: Some(contract(number, &seller(1), 10_000_000)),
    })
    .await
    .map(|response| response.into_inner().claim.expect("a claim"))
}

async fn applicant(stack: &Stack, subject: &str, enterprise: &subsidy_common::Uscc) -> App {
    let token = auth::token(subject, &[Role::Applicant], &[enterprise.to_string()], None);
    App::new(
        stack
            .channel_as(
                ServiceKind::Application,
                Transport::Anonymous,
                Credentials::Token(token.into()),
            )
            .await,
    )
}

#[tokio::test]
async fn an_applicant_sees_and_touches_only_its_own_enterprises() {
    // Proves tenant isolation: applicant B cannot read, list, withdraw or see the history of
    // applicant A's claim (NOT_FOUND, never PERMISSION_DENIED), cannot submit for A's
    // enterprise (ENTERPRISE_NOT_BOUND), cannot read A's reservation in the budget, and sees
    // none of A's events; A sees its own.
    let stack = subsidy_tests::spawn().await;
    let (a_enterprise, b_enterprise) = (shandong(920), shandong(921));
    let mut operator = stack.app().await;
    register(&mut operator, &a_enterprise).await;
    register(&mut operator, &b_enterprise).await;
    let mut a = applicant(&stack, "applicant-a", &a_enterprise).await;
    let mut b = applicant(&stack, "applicant-b", &b_enterprise).await;
    let claim = submit(&mut a, "a-1", &a_enterprise, "A-1")
        .await
        .expect("A submits");
    let not_found = b
        .get_claim(pb::GetClaimRequest {
            claim_id: claim.claim_id.clone(),
        })
        .await
        .expect_err("B cannot read A's claim");
    assert_eq!(not_found.code(), Code::NotFound);
    assert_eq!(reason(&not_found).as_deref(), Some("CLAIM_NOT_FOUND"));
    let withdraw = b
        .withdraw_claim(pb::WithdrawClaimRequest {
            request_id: "b-withdraws".into(),
            claim_id: claim.claim_id.clone(),
            reason: "not mine".into(),
        })
        .await
        .expect_err("B cannot withdraw A's claim");
    assert_eq!(withdraw.code(), Code::NotFound);
    let history = b
        .list_application_history(pb::ListApplicationHistoryRequest {
            application_id: claim.claim_id.clone(),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .expect_err("B cannot read A's history");
    assert_eq!(history.code(), Code::NotFound);
    let listed = b
        .list_claims(pb::ListClaimsRequest::default())
        .await
        .expect("B lists")
        .into_inner();
    assert!(listed.claims.is_empty(), "{listed:?}");
    let listed = a
        .list_claims(pb::ListClaimsRequest::default())
        .await
        .expect("A lists")
        .into_inner();
    assert_eq!(listed.claims.len(), 1);
    let foreign = submit(&mut b, "b-for-a", &a_enterprise, "B-FOR-A")
        .await
        .expect_err("B cannot submit for A's enterprise");
    assert_eq!(foreign.code(), Code::PermissionDenied);
    assert_eq!(reason(&foreign).as_deref(), Some("ENTERPRISE_NOT_BOUND"));

    let b_token = auth::token(
        "applicant-b",
        &[Role::Applicant],
        &[b_enterprise.to_string()],
        None,
    );
    let mut budget = BudgetServiceClient::new(
        stack
            .channel_as(
                ServiceKind::Budget,
                Transport::Anonymous,
                Credentials::Token(b_token.clone().into()),
            )
            .await,
    );
    let reservation_id = subsidy_testkit::eventually("A's claim holds money", || {
        let mut operator = operator.clone();
        let claim_id = claim.claim_id.clone();
        async move {
            let claim = operator
                .get_claim(pb::GetClaimRequest { claim_id })
                .await
                .ok()?
                .into_inner()
                .claim?;
            Some(claim.reservation_id).filter(|id| !id.is_empty())
        }
    })
    .await;
    let hidden = budget
        .get_reservation(bpb::GetReservationRequest {
            reservation_id: reservation_id.clone(),
        })
        .await
        .expect_err("B cannot read A's reservation");
    assert_eq!(hidden.code(), Code::NotFound);
    let mut events = NotificationServiceClient::new(
        stack
            .channel_as(
                ServiceKind::Notification,
                Transport::Anonymous,
                Credentials::Token(b_token.into()),
            )
            .await,
    );
    let seen = events
        .list_events(npb::ListEventsRequest::default())
        .await
        .expect("B lists events")
        .into_inner();
    assert!(
        seen.events
            .iter()
            .all(|event| event.enterprise_uscc != a_enterprise.as_str()),
        "{seen:?}"
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn two_callers_using_the_same_request_id_never_meet() {
    // Proves idempotency keys are scoped to the caller: two applicants submitting different
    // claims under one request id both get their own claim, a replay by each returns its own,
    // and neither can read the other's response by replaying.
    let stack = subsidy_tests::spawn().await;
    let (first, second) = (shandong(930), shandong(931));
    let mut operator = stack.app().await;
    register(&mut operator, &first).await;
    register(&mut operator, &second).await;
    let mut one = applicant(&stack, "applicant-one", &first).await;
    let mut two = applicant(&stack, "applicant-two", &second).await;
    let a = submit(&mut one, "same-id", &first, "ONE-1")
        .await
        .expect("one");
    let b = submit(&mut two, "same-id", &second, "TWO-1")
        .await
        .expect("two");
    assert_ne!(a.claim_id, b.claim_id);
    assert_eq!(b.enterprise_uscc, second.as_str());
    let again = submit(&mut one, "same-id", &first, "ONE-1")
        .await
        .expect("replay");
    assert_eq!(again.claim_id, a.claim_id);
    let reused = submit(&mut two, "same-id", &second, "ONE-1")
        .await
        .expect_err("the same id with another body is a reuse, for its own caller");
    assert_eq!(reason(&reused).as_deref(), Some("REQUEST_ID_REUSED"));
    stack.shutdown().await;
}

async fn audit_records(stack: &Stack, kind: ServiceKind, rpc: &str) -> Vec<apb::AuditRecord> {
    let token = auth::token("auditor-1", &[Role::Auditor], &[], None);
    let mut client = AuditServiceClient::new(
        stack
            .channel_as(kind, Transport::Anonymous, Credentials::Token(token.into()))
            .await,
    );
    client
        .list_audit_records(apb::ListAuditRecordsRequest {
            rpc: rpc.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("an auditor lists the audit trail")
        .into_inner()
        .records
}

#[tokio::test]
async fn every_change_names_its_real_actor_in_history_ledger_and_audit_trail() {
    // Proves the actor is the authenticated principal: a reviewer's approval is recorded as
    // that reviewer in the application's history and audit trail and, through the application
    // acting for the reviewer, in the budget's ledger and audit trail; the submission is
    // recorded as the applicant; a refused change is recorded with its refusal.
    let stack = subsidy_tests::spawn().await;
    let buyer = shandong(940);
    let mut operator = stack.app().await;
    register(&mut operator, &buyer).await;
    let mut submitter = applicant(&stack, "applicant-zhang", &buyer).await;
    let claim = submit(&mut submitter, "audit-1", &buyer, "AUDIT-1")
        .await
        .expect("submitted");
    let claim_id = claim.claim_id.clone();
    subsidy_testkit::eventually("the claim awaits review", || {
        let mut operator = operator.clone();
        let claim_id = claim_id.clone();
        async move {
            let claim = operator
                .get_claim(pb::GetClaimRequest { claim_id })
                .await
                .ok()?
                .into_inner()
                .claim?;
            (claim.state() == pb::ClaimState::PendingReview).then_some(())
        }
    })
    .await;
    let reviewer = auth::token("r.wang", &[Role::Reviewer], &[], None);
    let mut review = App::new(
        stack
            .channel_as(
                ServiceKind::Application,
                Transport::Anonymous,
                Credentials::Token(reviewer.into()),
            )
            .await,
    );
    let impersonation = review
        .approve_claim(pb::ApproveClaimRequest {
            request_id: "approve-as-another".into(),
            claim_id: claim_id.clone(),
            verified_paid_amount: cny(10_000_000),
            benefit_rating: 0,
            reviewer_id: "r.li".into(),
            note: String::new(),
        })
        .await
        .expect_err("nobody reviews under another reviewer's name");
    assert_eq!(impersonation.code(), Code::InvalidArgument);
    assert!(
        impersonation.message().contains("reviewer_id"),
        "{impersonation:?}"
    );
    // Approval settles on verified invoices: the applicant gives one, the reviewer verifies it.
    let held = review
        .get_claim(pb::GetClaimRequest {
            claim_id: claim_id.clone(),
        })
        .await
        .expect("the reviewer reads the claim")
        .into_inner()
        .claim
        .expect("a claim");
    let contract = held.contract.clone().expect("a contract");
    let invoice = requests::invoice(
        &claim_id,
        &contract.seller_uscc,
        &held.enterprise_uscc,
        10_000_000,
        contract.signing_date.expect("a signing date"),
    );
    let number = invoice.invoice_number.clone();
    submitter
        .add_claim_invoices(pb::AddClaimInvoicesRequest {
            request_id: "invoice-audit-1".into(),
            claim_id: claim_id.clone(),
            invoices: vec![invoice],
        })
        .await
        .expect("the applicant adds an invoice");
    review
        .verify_claim_invoice(pb::VerifyClaimInvoiceRequest {
            request_id: "verify-audit-1".into(),
            claim_id: claim_id.clone(),
            invoice_code: String::new(),
            invoice_number: number,
            state: pb::InvoiceVerificationState::Verified as i32,
            note: String::new(),
        })
        .await
        .expect("the reviewer verifies it");
    review
        .approve_claim(pb::ApproveClaimRequest {
            request_id: "approve-audit-1".into(),
            claim_id: claim_id.clone(),
            verified_paid_amount: cny(10_000_000),
            benefit_rating: 0,
            reviewer_id: "r.wang".into(),
            note: String::new(),
        })
        .await
        .expect("approved");
    let denied = submitter
        .approve_claim(pb::ApproveClaimRequest {
            request_id: "self-approval".into(),
            claim_id: claim_id.clone(),
            verified_paid_amount: cny(10_000_000),
            benefit_rating: 0,
            reviewer_id: "me".into(),
            note: String::new(),
        })
        .await
        .expect_err("an applicant may not approve");
    assert_eq!(denied.code(), Code::PermissionDenied);

    let history = operator
        .list_application_history(pb::ListApplicationHistoryRequest {
            application_id: claim_id.clone(),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let actors: Vec<&str> = history.iter().map(|entry| entry.actor.as_str()).collect();
    assert!(actors.contains(&"applicant:applicant-zhang"), "{actors:?}");
    assert!(actors.contains(&"reviewer:r.wang"), "{actors:?}");

    let submissions = audit_records(
        &stack,
        ServiceKind::Application,
        "/subsidy.application.v1.ApplicationService/SubmitClaim",
    )
    .await;
    let submission = submissions
        .iter()
        .find(|record| record.targets.contains(&claim_id))
        .expect("the submission is audited");
    assert_eq!(submission.actor, "applicant:applicant-zhang");
    assert_eq!(submission.outcome, "OK");
    assert_eq!(submission.request_id, "audit-1");
    assert_eq!(submission.trace_id.len(), 32);
    let approvals = audit_records(
        &stack,
        ServiceKind::Application,
        "/subsidy.application.v1.ApplicationService/ApproveClaim",
    )
    .await;
    assert!(
        approvals
            .iter()
            .any(|r| r.actor == "reviewer:r.wang" && r.outcome == "OK"),
        "{approvals:?}"
    );
    assert!(
        approvals
            .iter()
            .any(|r| r.principal == "user:applicant-zhang"
                && r.outcome == "PermissionDenied PERMISSION_DENIED"),
        "{approvals:?}"
    );
    let commits = audit_records(
        &stack,
        ServiceKind::Budget,
        "/subsidy.budget.v1.BudgetService/Commit",
    )
    .await;
    assert!(
        commits
            .iter()
            .any(|r| r.actor == "service:application for reviewer:r.wang"
                && r.on_behalf_of == "reviewer:r.wang"
                && r.role == "service"),
        "{commits:?}"
    );
    let ledger = stack
        .budget()
        .await
        .list_ledger_entries(bpb::ListLedgerEntriesRequest {
            pool_id: "compute-voucher-2025".into(),
            page_size: 1000,
            page_token: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(
        ledger
            .iter()
            .any(|entry| entry.actor == "service:application for reviewer:r.wang"),
        "{ledger:?}"
    );
    // Funding is the application's own step: the hold names the service alone, never the
    // person whose request happened to drive the pool's line.
    let approved = operator
        .get_claim(pb::GetClaimRequest {
            claim_id: claim_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .claim
        .unwrap();
    assert_eq!(approved.reviewer_id, "r.wang");
    let reserved: Vec<&bpb::LedgerEntry> = ledger
        .iter()
        .filter(|entry| {
            entry.reservation_id == approved.reservation_id
                && entry.kind() == bpb::LedgerEntryKind::Reserved
        })
        .collect();
    assert_eq!(reserved.len(), 1, "{ledger:?}");
    assert_eq!(reserved[0].actor, "service:application");

    // A rejection by reviewer r.li (reviewer_id left empty): the claim names r.li, and the
    // release of its hold names r.li in the budget's ledger.
    let rejected = submit(&mut submitter, "audit-2", &buyer, "AUDIT-2")
        .await
        .expect("submitted");
    let reviewer_li = auth::token("r.li", &[Role::Reviewer], &[], None);
    let mut review_li = App::new(
        stack
            .channel_as(
                ServiceKind::Application,
                Transport::Anonymous,
                Credentials::Token(reviewer_li.into()),
            )
            .await,
    );
    let claim_2 = subsidy_testkit::eventually("the second claim holds its money", || {
        let mut operator = operator.clone();
        let claim_id = rejected.claim_id.clone();
        async move {
            let claim = operator
                .get_claim(pb::GetClaimRequest { claim_id })
                .await
                .ok()?
                .into_inner()
                .claim?;
            (claim.state() == pb::ClaimState::PendingReview).then_some(claim)
        }
    })
    .await;
    let ended = review_li
        .reject_claim(pb::RejectClaimRequest {
            request_id: "reject-audit-2".into(),
            claim_id: claim_2.claim_id.clone(),
            reason: pb::ClaimRejectionReason::PaymentNotVerified as i32,
            note: String::new(),
            reviewer_id: String::new(),
        })
        .await
        .expect("rejected")
        .into_inner()
        .claim
        .unwrap();
    assert_eq!(ended.reviewer_id, "r.li");
    subsidy_testkit::eventually("the release names the reviewer", || {
        let stack = &stack;
        let reservation_id = claim_2.reservation_id.clone();
        async move {
            let entries = stack
                .budget()
                .await
                .list_ledger_entries(bpb::ListLedgerEntriesRequest {
                    pool_id: "compute-voucher-2025".into(),
                    page_size: 1000,
                    page_token: String::new(),
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner()
                .entries;
            let released = entries.iter().find(|entry| {
                entry.reservation_id == reservation_id
                    && entry.kind() == bpb::LedgerEntryKind::Released
            })?;
            assert_eq!(released.actor, "service:application for reviewer:r.li");
            Some(())
        }
    })
    .await;
    stack.shutdown().await;
}

#[tokio::test]
async fn the_runtime_role_cannot_change_or_remove_what_is_on_record() {
    // Proves the append-only records hold against the connection the services use: as the
    // runtime role (PostgreSQL) or through the triggers (SQLite), UPDATE and DELETE of the
    // audit trail, the application's history and decision links, the budget's ledger and the
    // rules' publications and stored decisions are refused; on PostgreSQL by privilege
    // (SQLSTATE 42501), not only by trigger.
    let stack = subsidy_tests::spawn().await;
    // Something on record in every table (SQLite's triggers act on rows that exist): a claim
    // (history, its decision and the link to it, application and budget audit, ledger), a
    // denylist change (rules audit), a registered provider (its first status change), its
    // events (notification audit); the policies and pools are seeded.
    let buyer = shandong(950);
    let mut operator = stack.app().await;
    register(&mut operator, &buyer).await;
    submit(&mut operator, "on-record", &buyer, "ON-RECORD-1")
        .await
        .expect("submitted");
    subsidy_proto::rules::rules_service_client::RulesServiceClient::new(
        stack.channel(ServiceKind::Rules).await,
    )
    .replace_denylist(subsidy_proto::rules::ReplaceDenylistRequest {
        request_id: "on-record".into(),
        entries: Vec::new(),
    })
    .await
    .expect("the denylist is replaced");
    subsidy_proto::rules::rules_service_client::RulesServiceClient::new(
        stack.channel(ServiceKind::Rules).await,
    )
    .register_provider(subsidy_proto::rules::RegisterProviderRequest {
        request_id: "on-record-provider".into(),
        uscc: shandong(951).to_string(),
        name: "on record".into(),
        effective_date: Some(subsidy_proto::google::r#type::Date {
            year: 2025,
            month: 1,
            day: 1,
        }),
        reason: "admitted".into(),
        data_centers: vec![subsidy_proto::rules::DataCenter {
            name: "济南智算中心".into(),
            division_code: "370102".into(),
            capacity_pflops: "1".into(),
            status: 0,
        }],
    })
    .await
    .expect("the provider is registered");
    subsidy_testkit::eventually("the notification service recorded an event", || async {
        let published = audit_records(
            &stack,
            ServiceKind::Notification,
            "/subsidy.notification.v1.NotificationService/PublishEvent",
        )
        .await;
        (!published.is_empty()).then_some(())
    })
    .await;
    for (kind, tables) in [
        (
            ServiceKind::Application,
            vec![
                ("audit_log", "actor"),
                ("history", "actor"),
                ("decision_links", "purpose"),
            ],
        ),
        (
            ServiceKind::Budget,
            vec![("audit_log", "actor"), ("ledger_entries", "actor")],
        ),
        (
            ServiceKind::Rules,
            vec![
                ("audit_log", "actor"),
                ("policy_versions", "publisher"),
                ("decisions", "subject_uscc"),
                ("provider_status_changes", "reason"),
            ],
        ),
        (ServiceKind::Notification, vec![("audit_log", "actor")]),
    ] {
        let config = &stack.configs[&kind].database;
        let runtime =
            subsidy_common::db::Db::connect(&config.url, 1, std::time::Duration::from_secs(10))
                .await
                .expect("connect as the runtime role");
        let postgres = config.url.starts_with("postgres");
        for (table, column) in tables {
            for statement in [
                format!("UPDATE {table} SET {column} = {column}"),
                format!("DELETE FROM {table}"),
            ] {
                let refused = sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
                    .execute(&runtime.pool)
                    .await
                    .expect_err(&format!("{} refuses {statement}", kind.name()));
                if postgres {
                    let code = refused
                        .as_database_error()
                        .and_then(|error| error.code())
                        .map(|code| code.to_string());
                    assert_eq!(code.as_deref(), Some("42501"), "{statement}: {refused}");
                }
            }
        }
    }
    stack.shutdown().await;
}

/// Writes a fresh development CA and the budget's certificate from it into `dir`.
fn write_budget_pki(dir: &std::path::Path, ca_name: &str) {
    let ca = subsidy_common::auth::dev::certificate_authority(ca_name).unwrap();
    let (chain, key) = subsidy_common::auth::dev::leaf(
        &ca,
        "budget",
        &["127.0.0.1".into(), "localhost".into()],
        &[Service::Budget.spiffe_id()],
    )
    .unwrap();
    // Written beside and renamed into place, as a Kubernetes Secret update swaps its files.
    for (name, contents) in [
        ("ca.crt", ca.pem()),
        ("budget.crt", chain),
        ("budget.key", key),
    ] {
        let staged = dir.join(format!("{name}.new"));
        std::fs::write(&staged, contents).unwrap();
        std::fs::rename(&staged, dir.join(name)).unwrap();
    }
}

/// Whether a TLS connection trusting only `ca` reaches `url`'s health service.
async fn trusted_by(ca: &std::path::Path, url: &str) -> bool {
    let Ok(connector) = Connector::anonymous(ca) else {
        return false;
    };
    let Ok(channel) = tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect_with_connector(connector)
        .await
    else {
        return false;
    };
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .is_ok()
}

#[tokio::test]
async fn new_certificates_are_served_without_a_restart() {
    // Proves certificate rotation without a restart: the budget serves the certificate of CA
    // "one"; its files are replaced by a certificate of CA "two"; within the reload interval
    // new connections are served the new certificate (trusting only CA two succeeds, trusting
    // only CA one fails), and the process never stopped.
    let dir = std::env::temp_dir().join(format!("subsidy-rotate-{}", uuid::Uuid::new_v4()));
    let (one, two) = (dir.join("one"), dir.join("two"));
    for path in [&dir, &one, &two] {
        std::fs::create_dir_all(path).unwrap();
    }
    write_budget_pki(&dir, "rotation CA one");
    std::fs::copy(dir.join("ca.crt"), one.join("ca.crt")).unwrap();
    let database = subsidy_common::db::testing::fresh_database("rotate").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let file = |name: &str| dir.join(name).display().to_string();
    let env: std::collections::HashMap<String, String> = [
        ("SUBSIDY_LISTEN", listener.local_addr().unwrap().to_string()),
        ("SUBSIDY_METRICS_LISTEN", "127.0.0.1:0".to_owned()),
        ("SUBSIDY_DATABASE_URL", database.url.clone()),
        ("SUBSIDY_TLS_CERT_FILE", file("budget.crt")),
        ("SUBSIDY_TLS_KEY_FILE", file("budget.key")),
        ("SUBSIDY_TLS_CA_FILE", file("ca.crt")),
        ("SUBSIDY_TLS_RELOAD_INTERVAL_MS", "100".to_owned()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value))
    .collect();
    let config =
        subsidy_common::config::Config::load(ServiceKind::Budget, None, &env).expect("config");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(subsidy_budget::run(config, listener, async move {
        let _ = stopped.await;
    }));
    subsidy_testkit::eventually("the budget serves CA one's certificate", || {
        let (ca, url) = (one.join("ca.crt"), url.clone());
        async move { trusted_by(&ca, &url).await.then_some(()) }
    })
    .await;
    write_budget_pki(&dir, "rotation CA two");
    std::fs::copy(dir.join("ca.crt"), two.join("ca.crt")).unwrap();
    subsidy_testkit::eventually("the budget serves CA two's certificate", || {
        let (ca, url) = (two.join("ca.crt"), url.clone());
        async move { trusted_by(&ca, &url).await.then_some(()) }
    })
    .await;
    assert!(!trusted_by(&one.join("ca.crt"), &url).await);
    assert!(!server.is_finished(), "the budget kept running");
    let _ = stop.send(());
    server.await.unwrap().expect("the budget stops cleanly");
}

#[tokio::test]
async fn an_agency_known_by_its_certificate_acts_within_its_roles_and_enterprises() {
    // Proves agency client certificates: a certificate of the configured agencies' CA, named
    // in the agencies file as an applicant for its enterprises, may list and submit for those
    // enterprises only, may not approve, and a person's token sent over the agency's
    // connection acts as that person instead.
    let stack = subsidy_tests::spawn().await;
    let own = shandong(0);
    let mut operator = stack.app().await;
    register(&mut operator, &own).await;
    register(&mut operator, &shandong(960)).await;
    let mut agency = App::new(
        stack
            .channel_as(
                ServiceKind::Application,
                Transport::Agency,
                Credentials::None,
            )
            .await,
    );
    let claim = submit(&mut agency, "agency-1", &own, "AGENCY-1")
        .await
        .expect("the agency submits for its enterprise");
    let foreign = submit(&mut agency, "agency-2", &shandong(960), "AGENCY-2")
        .await
        .expect_err("not for another enterprise");
    assert_eq!(reason(&foreign).as_deref(), Some("ENTERPRISE_NOT_BOUND"));
    let denied = agency
        .reject_claim(pb::RejectClaimRequest {
            request_id: "agency-reject".into(),
            claim_id: claim.claim_id.clone(),
            reason: pb::ClaimRejectionReason::Other as i32,
            note: "no".into(),
            reviewer_id: String::new(),
        })
        .await
        .expect_err("an applicant agency may not review");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let mut request = tonic::Request::new(pb::GetClaimRequest {
        claim_id: claim.claim_id.clone(),
    });
    let reviewer = auth::token("r.li", &[Role::Reviewer], &[], None);
    request
        .metadata_mut()
        .insert("authorization", auth::bearer(&reviewer));
    agency
        .get_claim(request)
        .await
        .expect("a reviewer's token over the agency's connection reads as the reviewer");
    let audits = audit_records(
        &stack,
        ServiceKind::Application,
        "/subsidy.application.v1.ApplicationService/SubmitClaim",
    )
    .await;
    assert!(
        audits
            .iter()
            .any(|r| r.actor == format!("agency:{}", auth::AGENCY) && r.outcome == "OK"),
        "{audits:?}"
    );
    stack.shutdown().await;
}
