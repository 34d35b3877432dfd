//! Compute-voucher claims through the application service with fake peers: input validation,
//! the contract's uniqueness, transitions, idempotency, listing, and a rules outage finished by
//! the reconciler. The scenarios with the real budget, rules and notification services live in
//! the cross-service tests of `tests/`.

mod support;

use futures::future::join_all;
use subsidy_common::config::ServiceKind;
use subsidy_proto::application as pb;
use subsidy_proto::status::{reason, violated_fields};
use support::*;
use tonic::Code;

#[tokio::test]
async fn concurrent_claims_on_one_contract_record_exactly_one() {
    // Proves the contract's uniqueness holds under concurrent submissions.
    let (stack, _peers) = with_pool(POOL_2025_FEN, LONG_HOLD_SECONDS, &[]).await;
    let mut app = stack.app().await;
    let buyer = shandong(7);
    register(&mut app, &buyer).await;
    let results = join_all((0..8).map(|i| {
        let mut app = app.clone();
        let buyer = buyer.clone();
        async move {
            app.submit_claim(submit(
                &format!("same-{i}"),
                &buyer,
                contract("SAME-1", &seller(1), 10_000_000),
            ))
            .await
        }
    }))
    .await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1, "exactly one claim on the contract");
    for status in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(reason(status).as_deref(), Some("DUPLICATE_CONTRACT"));
    }
    let db = stack.database(ServiceKind::Application).await;
    assert_eq!(count(&db, "claims").await, 1);
}

#[tokio::test]
async fn invalid_claims_are_refused_with_field_violations_and_write_nothing() {
    // Proves input validation: INVALID_ARGUMENT naming the field, nothing recorded.
    let (stack, _peers) = with_pool(POOL_2025_FEN, LONG_HOLD_SECONDS, &[]).await;
    let mut app = stack.app().await;
    let buyer = shandong(15);
    register(&mut app, &buyer).await;
    let db = stack.database(ServiceKind::Application).await;
    let keys_before = count(&db, "idempotency_keys").await;
    let base = contract("BAD-1", &seller(1), 10_000_000);
    let mut cases: Vec<(pb::SubmitClaimRequest, &str)> = Vec::new();
    let with = |change: &dyn Fn(&mut pb::ComputeContract)| {
        let mut contract = base.clone();
        change(&mut contract);
        submit("bad", &buyer, contract)
    };
    cases.push((with(&|c| c.total = cny(0)), "contract.total"));
    cases.push((
        with(&|c| {
            c.total = Some(subsidy_proto::google::r#type::Money {
                currency_code: "CNY".into(),
                units: 1,
                nanos: 5_000_000,
            })
        }),
        "contract.total",
    ));
    cases.push((
        with(&|c| {
            c.total = Some(subsidy_proto::google::r#type::Money {
                currency_code: "USD".into(),
                units: 1,
                nanos: 0,
            })
        }),
        "contract.total",
    ));
    cases.push((
        with(&|c| c.seller_uscc = "91350100M000100Y44".into()),
        "contract.seller_uscc",
    ));
    cases.push((
        with(&|c| c.contract_number = String::new()),
        "contract.contract_number",
    ));
    cases.push((
        with(&|c| c.contract_number = "x".repeat(65)),
        "contract.contract_number",
    ));
    cases.push((with(&|c| c.compute_type = 0), "contract.compute_type"));
    cases.push((
        with(&|c| c.data_center_division_code = "37".into()),
        "contract.data_center_division_code",
    ));
    cases.push((
        with(&|c| {
            c.signing_date = Some(subsidy_proto::google::r#type::Date {
                year: 2025,
                month: 2,
                day: 30,
            })
        }),
        "contract.signing_date",
    ));
    cases.push((
        with(&|c| {
            c.related_party = Some(pb::RelatedPartyDeclaration {
                related: true,
                relationship_description: String::new(),
            })
        }),
        "contract.related_party.relationship_description",
    ));
    cases.push((
        with(&|c| c.scenario_description = String::new()),
        "contract.scenario_description",
    ));
    cases.push((
        with(&|c| c.attachments[0].sha256_hex = "XYZ".into()),
        "contract.attachments[0].sha256_hex",
    ));
    cases.push((
        with(&|c| c.attachments[0].file_name = "../etc/passwd".into()),
        "contract.attachments[0].file_name",
    ));
    let mut bad_buyer = submit("bad", &buyer, base.clone());
    bad_buyer.enterprise_uscc = "91370100MA0000001X".into();
    cases.push((bad_buyer, "enterprise_uscc"));
    let mut bad_request_id = submit("", &buyer, base.clone());
    bad_request_id.request_id = "has space".into();
    cases.push((bad_request_id, "request_id"));
    for (request, field) in cases {
        let status = app.submit_claim(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        assert_eq!(reason(&status).as_deref(), Some("INVALID_ARGUMENT"));
        assert!(
            violated_fields(&status).contains(&field.to_string()),
            "{field} in {:?}",
            violated_fields(&status)
        );
    }
    let status = app
        .submit_claim(submit("nobody", &shandong(99), base.clone()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(reason(&status).as_deref(), Some("ENTERPRISE_NOT_FOUND"));
    assert_eq!(count(&db, "claims").await, 0);
    assert_eq!(count(&db, "history").await, 0);
    assert_eq!(count(&db, "idempotency_keys").await, keys_before);

    // A verified amount other than the verified invoiced total is refused and changes nothing.
    let claim = submitted(&mut app, "ok", &buyer, base).await;
    verify_invoices_up_to(&app, &claim.claim_id, 10_000_000).await;
    let claim = get_claim(&mut app, &claim.claim_id).await;
    let status = app
        .approve_claim(approve("too-much", &claim.claim_id, 10_000_001))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(reason(&status).as_deref(), Some("VERIFIED_AMOUNT_MISMATCH"));
    assert_eq!(get_claim(&mut app, &claim.claim_id).await, claim);
}

#[tokio::test]
async fn transitions_not_allowed_fail_with_a_stable_reason_and_change_nothing() {
    // Proves FAILED_PRECONDITION/TRANSITION_NOT_ALLOWED from each wrong state.
    let (stack, _peers) = with_pool(POOL_2025_FEN, LONG_HOLD_SECONDS, &[]).await;
    let mut app = stack.app().await;
    let buyer = shandong(16);
    register(&mut app, &buyer).await;
    let claim = submitted(
        &mut app,
        "t-1",
        &buyer,
        contract("T-1", &seller(1), 10_000_000),
    )
    .await;
    let status = app
        .record_claim_disbursement(pb::RecordClaimDisbursementRequest {
            request_id: "t-d".into(),
            claim_id: claim.claim_id.clone(),
            payment_reference: "P".into(),
            payment_date: Some(today_shanghai()),
            amount: cny(500_000),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status).as_deref(), Some("TRANSITION_NOT_ALLOWED"));
    approve_claim(&app, approve("t-a", &claim.claim_id, 10_000_000))
        .await
        .unwrap();
    let approved = get_claim(&mut app, &claim.claim_id).await;
    for status in [
        app.withdraw_claim(pb::WithdrawClaimRequest {
            request_id: "t-w".into(),
            claim_id: claim.claim_id.clone(),
            reason: "changed my mind".into(),
        })
        .await
        .unwrap_err(),
        app.reject_claim(reject("t-r", &claim.claim_id))
            .await
            .unwrap_err(),
        approve_claim(&app, approve("t-a2", &claim.claim_id, 10_000_000))
            .await
            .unwrap_err(),
    ] {
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(reason(&status).as_deref(), Some("TRANSITION_NOT_ALLOWED"));
    }
    assert_eq!(get_claim(&mut app, &claim.claim_id).await, approved);
    let status = app
        .get_claim(pb::GetClaimRequest {
            claim_id: "claim-missing".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&status).as_deref(), Some("CLAIM_NOT_FOUND"));
}

#[tokio::test]
async fn a_replayed_request_returns_the_original_and_a_reused_request_id_is_refused() {
    // Proves idempotency by request_id across operations.
    let (stack, _peers) = with_pool(POOL_2025_FEN, LONG_HOLD_SECONDS, &[]).await;
    let mut app = stack.app().await;
    let buyer = shandong(17);
    register(&mut app, &buyer).await;
    let request = submit("i-1", &buyer, contract("I-1", &seller(1), 10_000_000));
    let first = app
        .submit_claim(request.clone())
        .await
        .unwrap()
        .into_inner();
    app.reject_claim(reject("i-r", &first.claim.as_ref().unwrap().claim_id))
        .await
        .unwrap();
    let replay = app.submit_claim(request).await.unwrap().into_inner();
    assert_eq!(
        replay, first,
        "the original response, not the current state"
    );
    let status = app
        .submit_claim(submit(
            "i-1",
            &buyer,
            contract("I-2", &seller(1), 10_000_000),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(reason(&status).as_deref(), Some("REQUEST_ID_REUSED"));
    let status = app
        .withdraw_claim(pb::WithdrawClaimRequest {
            request_id: "i-r".into(),
            claim_id: first.claim.unwrap().claim_id,
            reason: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&status).as_deref(), Some("REQUEST_ID_REUSED"));
    let db = stack.database(ServiceKind::Application).await;
    assert_eq!(count(&db, "claims").await, 1);
}

#[tokio::test]
async fn claims_are_listed_newest_first_with_filters_and_pages() {
    // Proves listing by state and enterprise with stable pagination.
    let (stack, _peers) = with_pool(POOL_2025_FEN, LONG_HOLD_SECONDS, &[]).await;
    let mut app = stack.app().await;
    let (a, b) = (shandong(18), beijing(19));
    register(&mut app, &a).await;
    register(&mut app, &b).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let who = if i % 2 == 0 { &a } else { &b };
        ids.push(
            submitted(
                &mut app,
                &format!("l-{i}"),
                who,
                contract(&format!("L-{i}"), &seller(1), 10_000_000),
            )
            .await
            .claim_id,
        );
    }
    app.reject_claim(reject("l-r", &ids[4])).await.unwrap();
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .list_claims(pb::ListClaimsRequest {
                page_size: 2,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.claims.len() <= 2);
        seen.extend(page.claims.into_iter().map(|c| c.claim_id));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    let of_a = app
        .list_claims(pb::ListClaimsRequest {
            enterprise_uscc: a.to_string(),
            state: pb::ClaimState::PendingReview as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .claims;
    assert_eq!(
        of_a.iter().map(|c| c.claim_id.clone()).collect::<Vec<_>>(),
        [ids[2].clone(), ids[0].clone()]
    );
    let none = app
        .list_claims(pb::ListClaimsRequest {
            submit_start_time: Some(in_seconds(3600)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .claims;
    assert!(none.is_empty());
}

#[tokio::test]
async fn the_reconciler_finishes_a_claim_whose_rules_call_failed() {
    // Proves that a claim left SUBMITTED by an outage is finished without any retry.
    let (stack, peers) = with_pool(POOL_2025_FEN, LONG_HOLD_SECONDS, &[]).await;
    let mut app = stack.app().await;
    let buyer = shandong(13);
    register(&mut app, &buyer).await;
    peers.rules.set_down(true);
    let status = app
        .submit_claim(submit(
            "r-1",
            &buyer,
            contract("R-1", &seller(1), 100_000_000),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    peers.rules.set_down(false);
    let claims = app
        .list_claims(pb::ListClaimsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .claims;
    wait_claim_state(&app, &claims[0].claim_id, pb::ClaimState::PendingReview).await;
}
