//! Compute-voucher claims through the application service, against the real budget service and
//! scripted rules and notification services.

mod support;

use futures::future::join_all;
use subsidy_proto::application as pb;
use subsidy_proto::budget as bpb;
use subsidy_proto::notification as npb;
use subsidy_proto::status::{reason, violated_fields};
use support::*;
use tonic::Code;

/// 30,000,000 CNY, the 2025 compute-voucher pool, in fen.
const POOL_2025_FEN: i64 = 3_000_000_000;
/// A hold long enough never to expire during a test, in seconds.
const LONG_HOLD_SECONDS: i64 = 3600;

async fn submitted(
    app: &mut pb::application_service_client::ApplicationServiceClient<tonic::transport::Channel>,
    request_id: &str,
    buyer: &subsidy_common::Uscc,
    contract: pb::ComputeContract,
) -> pb::Claim {
    app.submit_claim(submit(request_id, buyer, contract))
        .await
        .expect("submit a claim")
        .into_inner()
        .claim
        .unwrap()
}

#[tokio::test]
async fn a_claim_goes_from_submission_to_payment_with_its_whole_history_and_events() {
    // Proves the claim life cycle: reserve on submission, recompute and partial commit on
    // approval, payment; each step in the history and delivered as an event, in order.
    let system = System::with_pool(POOL_2025_FEN, LONG_HOLD_SECONDS, &[]).await;
    let mut app = system.app().await;
    let buyer = shandong(1);
    register(&mut app, &buyer).await;

    // 5% of 1,000,000.00 is 50,000.00.
    let claim = submitted(
        &mut app,
        "c-1",
        &buyer,
        contract("SD-2025-001", &seller(1), 100_000_000),
    )
    .await;
    assert_eq!(claim.state(), pb::ClaimState::PendingReview);
    assert!(claim.claim_id.starts_with("claim-"));
    assert_eq!(fen_of(&claim.reserved_amount), 5_000_000);
    let decision = claim.decision.clone().unwrap();
    assert!(decision.eligible);
    assert_eq!(decision.rate_basis_points, 500);
    assert_eq!(fen_of(&decision.entitlement), 5_000_000);
    let held = system.reservations(TEST_POOL, &claim.claim_id).await;
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].reservation_id, claim.reservation_id);
    assert_eq!(held[0].state(), bpb::ReservationState::Held);

    // Verified 800,000.00 invoiced and paid: 40,000.00 committed, 10,000.00 back to the pool.
    let approved = app
        .approve_claim(approve("a-1", &claim.claim_id, 80_000_000))
        .await
        .unwrap()
        .into_inner()
        .claim
        .unwrap();
    assert_eq!(approved.state(), pb::ClaimState::Approved);
    assert_eq!(fen_of(&approved.approved_amount), 4_000_000);
    assert_eq!(fen_of(&approved.verified_paid_amount), 80_000_000);
    assert_eq!(approved.reviewer_id, "reviewer-1");
    let pool = system.pool(TEST_POOL).await;
    assert_eq!(fen_of(&pool.committed), 4_000_000);
    assert_eq!(fen_of(&pool.held), 0);

    let paid = app
        .record_claim_disbursement(pb::RecordClaimDisbursementRequest {
            request_id: "d-1".into(),
            claim_id: claim.claim_id.clone(),
            payment_reference: "PAY-0001".into(),
            payment_date: Some(today_shanghai()),
            amount: cny(4_000_000),
        })
        .await
        .unwrap()
        .into_inner()
        .claim
        .unwrap();
    assert_eq!(paid.state(), pb::ClaimState::Disbursed);
    assert_eq!(fen_of(&paid.disbursed_amount), 4_000_000);
    assert_eq!(paid.disbursement.unwrap().payment_reference, "PAY-0001");

    let entries = history(&mut app, &claim.claim_id).await;
    let path: Vec<_> = entries
        .iter()
        .map(|e| {
            let state = |s: &Option<pb::ApplicationState>| match s.as_ref().and_then(|s| s.state) {
                Some(pb::application_state::State::ClaimState(v)) => pb::ClaimState::try_from(v)
                    .unwrap()
                    .as_str_name()
                    .to_owned(),
                _ => "-".to_owned(),
            };
            format!("{}>{}", state(&e.from_state), state(&e.to_state))
        })
        .collect();
    assert_eq!(
        path,
        [
            "->CLAIM_STATE_SUBMITTED",
            "CLAIM_STATE_SUBMITTED>CLAIM_STATE_SUBMITTED",
            "CLAIM_STATE_SUBMITTED>CLAIM_STATE_PENDING_REVIEW",
            "CLAIM_STATE_PENDING_REVIEW>CLAIM_STATE_APPROVED",
            "CLAIM_STATE_APPROVED>CLAIM_STATE_DISBURSED",
        ]
    );
    assert_eq!(
        entries.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(paid.revision, 5);
    assert_eq!(entries[0].request_id, "c-1");
    assert_eq!(entries[1].actor, "system");
    assert_eq!(entries[3].request_id, "a-1");

    let events = eventually("four claim events", || {
        let types = system.notification.types_for(&claim.claim_id);
        async move { (types.len() == 4).then_some(types) }
    })
    .await;
    assert_eq!(
        events,
        [
            npb::EventType::ClaimSubmitted,
            npb::EventType::ClaimReserved,
            npb::EventType::ClaimApproved,
            npb::EventType::ClaimDisbursed,
        ]
    );
    let approved_event = system
        .notification
        .events()
        .into_iter()
        .find(|e| e.r#type() == npb::EventType::ClaimApproved)
        .unwrap();
    assert_eq!(fen_of(&approved_event.amount), 4_000_000);
    assert_eq!(approved_event.recipient_email, "ops@example.cn");
    assert_eq!(approved_event.enterprise_uscc, buyer.to_string());
    assert_eq!(approved_event.program(), npb::Program::ComputeVoucher);
    assert_claims_consistent(&system).await;
}

#[tokio::test]
async fn the_enterprise_cap_of_5_000_000_is_reached_across_several_claims() {
    // Proves the cumulative cap: entitlements are cut to what remains, then refused.
    let system = System::with_pool(POOL_2025_FEN, LONG_HOLD_SECONDS, &[]).await;
    let mut app = system.app().await;
    let buyer = shandong(2);
    register(&mut app, &buyer).await;
    // Each contract of 40,000,000.00 is entitled to 2,000,000.00.
    let first = submitted(
        &mut app,
        "cap-1",
        &buyer,
        contract("CAP-1", &seller(1), 4_000_000_000),
    )
    .await;
    let second = submitted(
        &mut app,
        "cap-2",
        &buyer,
        contract("CAP-2", &seller(1), 4_000_000_000),
    )
    .await;
    let third = submitted(
        &mut app,
        "cap-3",
        &buyer,
        contract("CAP-3", &seller(1), 4_000_000_000),
    )
    .await;
    let fourth = submitted(
        &mut app,
        "cap-4",
        &buyer,
        contract("CAP-4", &seller(1), 4_000_000_000),
    )
    .await;
    assert_eq!(fen_of(&first.reserved_amount), 200_000_000);
    assert_eq!(fen_of(&second.reserved_amount), 200_000_000);
    assert_eq!(third.state(), pb::ClaimState::PendingReview);
    assert_eq!(
        fen_of(&third.reserved_amount),
        100_000_000,
        "cut to what remains"
    );
    assert_eq!(fourth.state(), pb::ClaimState::Ineligible);
    let failed: Vec<_> = fourth
        .decision
        .unwrap()
        .failed_reasons
        .into_iter()
        .map(|r| r.code)
        .collect();
    assert_eq!(failed, ["ENTERPRISE_CAP_REACHED"]);
    assert!(
        system
            .reservations(TEST_POOL, &fourth.claim_id)
            .await
            .is_empty()
    );
    let usage = system
        .budget()
        .await
        .get_beneficiary_usage(bpb::GetBeneficiaryUsageRequest {
            pool_id: TEST_POOL.into(),
            beneficiary_uscc: buyer.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .usage
        .unwrap();
    assert_eq!(fen_of(&usage.held), ENTERPRISE_CAP_FEN);

    // Another enterprise is not affected.
    let other = shandong(3);
    register(&mut app, &other).await;
    let claim = submitted(
        &mut app,
        "cap-5",
        &other,
        contract("CAP-5", &seller(1), 4_000_000_000),
    )
    .await;
    assert_eq!(fen_of(&claim.reserved_amount), 200_000_000);
    assert_claims_consistent(&system).await;
}

#[tokio::test]
async fn concurrent_claims_of_one_enterprise_never_exceed_its_cap() {
    // Proves that claims racing for the last of an enterprise's cap are decided again on the
    // usage the budget reports, never holding more than the cap.
    let system = System::with_pool(POOL_2025_FEN, LONG_HOLD_SECONDS, &[]).await;
    let mut app = system.app().await;
    let buyer = shandong(4);
    register(&mut app, &buyer).await;
    // Six claims of 2,000,000.00 each against a cap of 5,000,000.00.
    let results = join_all((0..6).map(|i| {
        let mut app = app.clone();
        let buyer = buyer.clone();
        async move {
            app.submit_claim(submit(
                &format!("race-{i}"),
                &buyer,
                contract(&format!("RACE-{i}"), &seller(1), 4_000_000_000),
            ))
            .await
            .map(|r| r.into_inner().claim.unwrap())
        }
    }))
    .await;
    let mut reserved = 0;
    for result in results {
        let claim = result.expect("every claim is recorded and decided");
        assert!(
            matches!(
                claim.state(),
                pb::ClaimState::PendingReview | pb::ClaimState::Ineligible
            ),
            "{:?}",
            claim.state()
        );
        reserved += fen_of(&claim.reserved_amount);
    }
    assert_eq!(reserved, ENTERPRISE_CAP_FEN, "the cap is used exactly");
    assert_eq!(
        fen_of(&system.pool(TEST_POOL).await.held),
        ENTERPRISE_CAP_FEN
    );
    assert_claims_consistent(&system).await;
}

#[tokio::test]
async fn a_second_claim_on_the_same_contract_is_rejected_unless_the_first_was_withdrawn() {
    // Proves duplicate detection by seller USCC and contract number, and that a withdrawal
    // frees both the contract and the money.
    let system = System::with_pool(POOL_2025_FEN, LONG_HOLD_SECONDS, &[]).await;
    let mut app = system.app().await;
    let buyer = shandong(5);
    let other_buyer = shandong(6);
    register(&mut app, &buyer).await;
    register(&mut app, &other_buyer).await;
    let first = submitted(
        &mut app,
        "dup-1",
        &buyer,
        contract("DUP-1", &seller(1), 10_000_000),
    )
    .await;

    for (request_id, who) in [("dup-2", &buyer), ("dup-3", &other_buyer)] {
        let status = app
            .submit_claim(submit(
                request_id,
                who,
                contract("DUP-1", &seller(1), 10_000_000),
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::AlreadyExists);
        assert_eq!(reason(&status).as_deref(), Some("DUPLICATE_CONTRACT"));
    }
    // The same number from another seller is another contract.
    submitted(
        &mut app,
        "dup-4",
        &buyer,
        contract("DUP-1", &seller(2), 10_000_000),
    )
    .await;

    let withdrawn = app
        .withdraw_claim(pb::WithdrawClaimRequest {
            request_id: "dup-w".into(),
            claim_id: first.claim_id.clone(),
            reason: "contract amended".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .claim
        .unwrap();
    assert_eq!(withdrawn.state(), pb::ClaimState::Withdrawn);
    let reservation = eventually("the hold to be released", || {
        let system = &system;
        let claim_id = first.claim_id.clone();
        async move {
            let held = system.reservations(TEST_POOL, &claim_id).await;
            (held[0].state() == bpb::ReservationState::Released).then_some(held)
        }
    })
    .await;
    assert_eq!(reservation.len(), 1);
    let again = submitted(
        &mut app,
        "dup-5",
        &other_buyer,
        contract("DUP-1", &seller(1), 10_000_000),
    )
    .await;
    assert_eq!(again.state(), pb::ClaimState::PendingReview);
    assert_claims_consistent(&system).await;
}

#[tokio::test]
async fn concurrent_claims_on_one_contract_record_exactly_one() {
    // Proves the contract's uniqueness holds under concurrent submissions.
    let system = System::with_pool(POOL_2025_FEN, LONG_HOLD_SECONDS, &[]).await;
    let mut app = system.app().await;
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
    let db = system.app_db().await;
    assert_eq!(count(&db, "claims").await, 1);
}

#[tokio::test]
async fn a_waitlisted_claim_is_promoted_in_submission_order_after_a_rejection() {
    // Proves strict FIFO: a later small claim does not skip the head even when it would fit,
    // and both are served, oldest first, when a rejection returns money.
    // A pool of 100,000.00.
    let system = System::with_pool(10_000_000, LONG_HOLD_SECONDS, &[]).await;
    let mut app = system.app().await;
    let buyer = shandong(8);
    register(&mut app, &buyer).await;
    let big = submitted(
        &mut app,
        "w-1",
        &buyer,
        contract("W-1", &seller(1), 160_000_000),
    )
    .await;
    assert_eq!(fen_of(&big.reserved_amount), 8_000_000);
    let head = submitted(
        &mut app,
        "w-2",
        &buyer,
        contract("W-2", &seller(1), 100_000_000),
    )
    .await;
    assert_eq!(head.state(), pb::ClaimState::Waitlisted);
    assert_eq!(head.waitlist_position, 1);
    // 10,000.00 would fit in the 20,000.00 left, but the head waits first.
    let small = submitted(
        &mut app,
        "w-3",
        &buyer,
        contract("W-3", &seller(1), 20_000_000),
    )
    .await;
    assert_eq!(small.state(), pb::ClaimState::Waitlisted);
    assert_eq!(small.waitlist_position, 2);

    // Approving the head while it waits is not allowed, and changes nothing.
    let status = app
        .approve_claim(approve("w-a", &head.claim_id, 100_000_000))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status).as_deref(), Some("TRANSITION_NOT_ALLOWED"));
    assert_eq!(
        get_claim(&mut app, &head.claim_id).await.revision,
        head.revision
    );

    app.reject_claim(reject("w-r", &big.claim_id))
        .await
        .unwrap();
    let promoted = wait_claim_state(&app, &head.claim_id, pb::ClaimState::PendingReview).await;
    assert_eq!(fen_of(&promoted.reserved_amount), 5_000_000);
    let second = wait_claim_state(&app, &small.claim_id, pb::ClaimState::PendingReview).await;
    assert_eq!(fen_of(&second.reserved_amount), 1_000_000);
    assert_eq!(second.waitlist_position, 0);
    let entries = history(&mut app, &head.claim_id).await;
    assert!(
        entries
            .last()
            .unwrap()
            .reason
            .contains("promoted from the waitlist"),
        "{entries:?}"
    );
    let pool = system.pool(TEST_POOL).await;
    assert_eq!(fen_of(&pool.held), 6_000_000);
    let released = system.reservations(TEST_POOL, &big.claim_id).await;
    assert_eq!(released[0].state(), bpb::ReservationState::Released);
    assert_claims_consistent(&system).await;
}

#[tokio::test]
async fn under_the_partial_shortfall_policy_the_head_receives_what_is_left() {
    // Proves the policy switch `shortfall: partial`.
    let system = System::with_pool(10_000_000, LONG_HOLD_SECONDS, &[]).await;
    system.rules.set_partial_claims(true);
    let mut app = system.app().await;
    let buyer = shandong(9);
    register(&mut app, &buyer).await;
    submitted(
        &mut app,
        "p-1",
        &buyer,
        contract("P-1", &seller(1), 160_000_000),
    )
    .await;
    let partial = submitted(
        &mut app,
        "p-2",
        &buyer,
        contract("P-2", &seller(1), 100_000_000),
    )
    .await;
    assert_eq!(partial.state(), pb::ClaimState::PendingReview);
    assert_eq!(fen_of(&partial.reserved_amount), 2_000_000);
    assert_eq!(fen_of(&partial.decision.unwrap().entitlement), 5_000_000);
    let waiting = submitted(
        &mut app,
        "p-3",
        &buyer,
        contract("P-3", &seller(1), 20_000_000),
    )
    .await;
    assert_eq!(waiting.state(), pb::ClaimState::Waitlisted);
    // Approval never commits more than was held.
    let approved = app
        .approve_claim(approve("p-a", &partial.claim_id, 100_000_000))
        .await
        .unwrap()
        .into_inner()
        .claim
        .unwrap();
    assert_eq!(fen_of(&approved.approved_amount), 2_000_000);
    assert_claims_consistent(&system).await;
}

#[tokio::test]
async fn an_expired_hold_moves_the_claim_to_expired_and_serves_the_waitlist() {
    // Proves that expiry by the budget is noticed and returns the money to waiting claims.
    let system = System::with_pool(10_000_000, 1, &[]).await;
    let mut app = system.app().await;
    let buyer = shandong(10);
    register(&mut app, &buyer).await;
    let first = submitted(
        &mut app,
        "e-1",
        &buyer,
        contract("E-1", &seller(1), 160_000_000),
    )
    .await;
    let waiting = submitted(
        &mut app,
        "e-2",
        &buyer,
        contract("E-2", &seller(1), 100_000_000),
    )
    .await;
    assert_eq!(waiting.state(), pb::ClaimState::Waitlisted);
    let mut budget = system.budget().await;
    eventually("the first hold to expire", || {
        let mut budget = budget.clone();
        async move {
            let expired = budget
                .expire_reservations(bpb::ExpireReservationsRequest {
                    limit: 1,
                    request_id: format!("expire-{}", rand::random::<u64>()),
                })
                .await
                .unwrap()
                .into_inner()
                .expired_count;
            (expired == 1).then_some(())
        }
    })
    .await;
    let expired = wait_claim_state(&app, &first.claim_id, pb::ClaimState::Expired).await;
    assert_eq!(
        history(&mut app, &expired.claim_id)
            .await
            .last()
            .unwrap()
            .actor,
        "system"
    );
    wait_claim_state(&app, &waiting.claim_id, pb::ClaimState::PendingReview).await;
    let status = app
        .approve_claim(approve("e-a", &first.claim_id, 160_000_000))
        .await
        .unwrap_err();
    assert_eq!(reason(&status).as_deref(), Some("TRANSITION_NOT_ALLOWED"));
    let _ = budget
        .list_pools(bpb::ListPoolsRequest::default())
        .await
        .unwrap();
    assert_claims_consistent(&system).await;
}

#[tokio::test]
async fn a_crash_between_reserve_and_record_converges_to_exactly_one_reservation() {
    // Proves that the derived request id makes the restarted service find the reservation the
    // dead one made instead of holding the money twice.
    let mut system = System::with_pool(POOL_2025_FEN, LONG_HOLD_SECONDS, &[]).await;
    let mut app = system.app().await;
    let buyer = shandong(11);
    register(&mut app, &buyer).await;
    let reached = subsidy_application::faults::hang_after_reserve("CRASH-1");
    let call = tokio::spawn({
        let mut app = app.clone();
        let buyer = buyer.clone();
        async move {
            app.submit_claim(submit(
                "crash-1",
                &buyer,
                contract("CRASH-1", &seller(1), 100_000_000),
            ))
            .await
        }
    });
    tokio::time::timeout(
        std::time::Duration::from_millis(WAIT_MS_MAX),
        reached.notified(),
    )
    .await
    .expect("the reservation was made");
    system.kill_app().await;
    call.abort();
    system.restart_app().await;
    let mut app = system.app().await;

    let claims = app
        .list_claims(pb::ListClaimsRequest {
            enterprise_uscc: buyer.to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .claims;
    assert_eq!(claims.len(), 1);
    let claim = wait_claim_state(&app, &claims[0].claim_id, pb::ClaimState::PendingReview).await;
    let reservations = system.reservations(TEST_POOL, &claim.claim_id).await;
    assert_eq!(reservations.len(), 1, "exactly one reservation");
    assert_eq!(reservations[0].reservation_id, claim.reservation_id);
    assert_eq!(fen_of(&system.pool(TEST_POOL).await.held), 5_000_000);

    // The client's retry gets the claim, and still nothing is held twice.
    let retried = submitted(
        &mut app,
        "crash-1",
        &buyer,
        contract("CRASH-1", &seller(1), 100_000_000),
    )
    .await;
    assert_eq!(retried.claim_id, claim.claim_id);
    assert_eq!(
        system.reservations(TEST_POOL, &claim.claim_id).await.len(),
        1
    );
    assert_claims_consistent(&system).await;
}

#[tokio::test]
async fn budget_unavailable_during_submit_is_unavailable_then_the_retry_succeeds() {
    // Proves a clear UNAVAILABLE while the budget is down, the claim kept, and success on a
    // retry with the same request id (the reconciler is held off by a long grace period).
    let mut system = System::with_pool(
        POOL_2025_FEN,
        LONG_HOLD_SECONDS,
        &[("SUBSIDY_APPLICATION_RECONCILE_GRACE_MS", "3600000")],
    )
    .await;
    let mut app = system.app().await;
    let buyer = shandong(12);
    register(&mut app, &buyer).await;
    system.stop_budget().await;
    let request = submit(
        "down-1",
        &buyer,
        contract("DOWN-1", &seller(1), 100_000_000),
    );
    let status = app.submit_claim(request.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(reason(&status).as_deref(), Some("UPSTREAM_UNAVAILABLE"));
    let recorded = app
        .list_claims(pb::ListClaimsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .claims;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].state(), pb::ClaimState::Submitted);

    system.restart_budget().await;
    let claim = app
        .submit_claim(request.clone())
        .await
        .unwrap()
        .into_inner()
        .claim
        .unwrap();
    assert_eq!(claim.claim_id, recorded[0].claim_id);
    assert_eq!(claim.state(), pb::ClaimState::PendingReview);
    assert_eq!(
        system.reservations(TEST_POOL, &claim.claim_id).await.len(),
        1
    );
    let replay = app
        .submit_claim(request)
        .await
        .unwrap()
        .into_inner()
        .claim
        .unwrap();
    assert_eq!(replay, claim, "a replay returns the original response");
    assert_claims_consistent(&system).await;
}

#[tokio::test]
async fn the_reconciler_finishes_a_claim_whose_rules_call_failed() {
    // Proves that a claim left SUBMITTED by an outage is finished without any retry.
    let system = System::with_pool(POOL_2025_FEN, LONG_HOLD_SECONDS, &[]).await;
    let mut app = system.app().await;
    let buyer = shandong(13);
    register(&mut app, &buyer).await;
    system.rules.set_down(true);
    let status = app
        .submit_claim(submit(
            "r-1",
            &buyer,
            contract("R-1", &seller(1), 100_000_000),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    system.rules.set_down(false);
    let claims = app
        .list_claims(pb::ListClaimsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .claims;
    wait_claim_state(&app, &claims[0].claim_id, pb::ClaimState::PendingReview).await;
}

#[tokio::test]
async fn events_written_while_notification_is_down_are_all_delivered_afterwards_in_order() {
    // Proves the outbox: nothing is lost while the notification service is down.
    let system = System::with_pool(POOL_2025_FEN, LONG_HOLD_SECONDS, &[]).await;
    system.notification.set_down(true);
    let mut app = system.app().await;
    let buyer = shandong(14);
    register(&mut app, &buyer).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let claim = submitted(
            &mut app,
            &format!("n-{i}"),
            &buyer,
            contract(&format!("N-{i}"), &seller(1), 10_000_000),
        )
        .await;
        ids.push(claim.claim_id);
    }
    app.reject_claim(reject("n-r", &ids[0])).await.unwrap();
    let db = system.app_db().await;
    let written = count(&db, "outbox").await;
    assert_eq!(written, 3 * 2 + 1);
    assert!(system.notification.events().is_empty());

    system.notification.set_down(false);
    let events = eventually("every event", || {
        let events = system.notification.events();
        async move { (events.len() as i64 == written).then_some(events) }
    })
    .await;
    assert_eq!(
        system.notification.types_for(&ids[0]),
        [
            npb::EventType::ClaimSubmitted,
            npb::EventType::ClaimReserved,
            npb::EventType::ClaimRejected
        ]
    );
    let times: Vec<_> = events
        .iter()
        .map(|e| {
            let t = e.occur_time.unwrap();
            (t.seconds, t.nanos)
        })
        .collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "delivered in the order they happened");
    eventually("the outbox to be drained", || {
        let db = db.clone();
        async move {
            let left: i64 = sqlx::query_scalar(
                "SELECT CAST(COUNT(*) AS BIGINT) FROM outbox WHERE delivered_us IS NULL",
            )
            .fetch_one(&db.pool)
            .await
            .unwrap();
            (left == 0).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn invalid_claims_are_refused_with_field_violations_and_write_nothing() {
    // Proves input validation: INVALID_ARGUMENT naming the field, nothing recorded.
    let system = System::with_pool(POOL_2025_FEN, LONG_HOLD_SECONDS, &[]).await;
    let mut app = system.app().await;
    let buyer = shandong(15);
    register(&mut app, &buyer).await;
    let db = system.app_db().await;
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

    // A verified amount above the contract total is refused and changes nothing.
    let claim = submitted(&mut app, "ok", &buyer, base).await;
    let status = app
        .approve_claim(approve("too-much", &claim.claim_id, 10_000_001))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        reason(&status).as_deref(),
        Some("APPROVED_AMOUNT_EXCEEDS_CONTRACT")
    );
    assert_eq!(get_claim(&mut app, &claim.claim_id).await, claim);
}

#[tokio::test]
async fn transitions_not_allowed_fail_with_a_stable_reason_and_change_nothing() {
    // Proves FAILED_PRECONDITION/TRANSITION_NOT_ALLOWED from each wrong state.
    let system = System::with_pool(POOL_2025_FEN, LONG_HOLD_SECONDS, &[]).await;
    let mut app = system.app().await;
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
    app.approve_claim(approve("t-a", &claim.claim_id, 10_000_000))
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
        app.approve_claim(approve("t-a2", &claim.claim_id, 10_000_000))
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
    let system = System::with_pool(POOL_2025_FEN, LONG_HOLD_SECONDS, &[]).await;
    let mut app = system.app().await;
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
    let db = system.app_db().await;
    assert_eq!(count(&db, "claims").await, 1);
}

#[tokio::test]
async fn claims_are_listed_newest_first_with_filters_and_pages() {
    // Proves listing by state and enterprise with stable pagination.
    let system = System::with_pool(POOL_2025_FEN, LONG_HOLD_SECONDS, &[]).await;
    let mut app = system.app().await;
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
async fn a_reservation_never_recorded_is_released_when_its_claim_was_withdrawn_meanwhile() {
    // Proves the reconciler's compensation: a hold made by a call that died before recording
    // it is found by its reference and released once the claim has moved on.
    let mut system = System::with_pool(
        POOL_2025_FEN,
        LONG_HOLD_SECONDS,
        &[("SUBSIDY_APPLICATION_RECONCILE_GRACE_MS", "3600000")],
    )
    .await;
    let mut app = system.app().await;
    let buyer = shandong(20);
    register(&mut app, &buyer).await;
    let reached = subsidy_application::faults::hang_after_reserve("ORPHAN-1");
    let call = tokio::spawn({
        let mut app = app.clone();
        let buyer = buyer.clone();
        async move {
            app.submit_claim(submit(
                "orphan-1",
                &buyer,
                contract("ORPHAN-1", &seller(1), 100_000_000),
            ))
            .await
        }
    });
    tokio::time::timeout(
        std::time::Duration::from_millis(WAIT_MS_MAX),
        reached.notified(),
    )
    .await
    .expect("the reservation was made");
    system.kill_app().await;
    call.abort();
    system.restart_app().await;
    let mut app = system.app().await;
    let claim_id = app
        .list_claims(pb::ListClaimsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .claims[0]
        .claim_id
        .clone();
    app.withdraw_claim(pb::WithdrawClaimRequest {
        request_id: "orphan-w".into(),
        claim_id: claim_id.clone(),
        reason: "filed twice".into(),
    })
    .await
    .unwrap();
    let orphan = system.reservations(TEST_POOL, &claim_id).await;
    assert_eq!(orphan.len(), 1);
    assert_eq!(
        orphan[0].state(),
        bpb::ReservationState::Held,
        "not yet found"
    );

    // Let the reconciler take over at once.
    system.kill_app().await;
    system
        .app_config
        .tweak_section(|s: &mut subsidy_application::settings::Settings| {
            s.reconcile_grace_ms = 10;
        });
    system.restart_app().await;
    eventually("the orphaned hold to be released", || {
        let system = &system;
        let claim_id = claim_id.clone();
        async move {
            let held = system.reservations(TEST_POOL, &claim_id).await;
            (held[0].state() == bpb::ReservationState::Released).then_some(())
        }
    })
    .await;
    let claim = get_claim(&mut system.app().await, &claim_id).await;
    assert_eq!(claim.state(), pb::ClaimState::Withdrawn);
    assert_eq!(claim.reservation_id, "");
    assert_claims_consistent(&system).await;
}

#[tokio::test]
async fn a_crash_between_commit_and_record_is_finished_by_the_reconciler() {
    // Proves that an approval whose commit was made but not recorded is completed after a
    // restart, committed once, and that the reviewer's retry gets the approval.
    let mut system = System::with_pool(POOL_2025_FEN, LONG_HOLD_SECONDS, &[]).await;
    let mut app = system.app().await;
    let buyer = shandong(21);
    register(&mut app, &buyer).await;
    let claim = submitted(
        &mut app,
        "commit-1",
        &buyer,
        contract("COMMIT-1", &seller(1), 100_000_000),
    )
    .await;
    let reached = subsidy_application::faults::hang_at(
        subsidy_application::faults::Point::AfterCommit,
        "COMMIT-1",
    );
    let request = approve("commit-a", &claim.claim_id, 60_000_000);
    let call = tokio::spawn({
        let mut app = app.clone();
        let request = request.clone();
        async move { app.approve_claim(request).await }
    });
    tokio::time::timeout(
        std::time::Duration::from_millis(WAIT_MS_MAX),
        reached.notified(),
    )
    .await
    .expect("the commit was made");
    system.kill_app().await;
    call.abort();
    system.restart_app().await;
    let app = system.app().await;
    let approved = wait_claim_state(&app, &claim.claim_id, pb::ClaimState::Approved).await;
    assert_eq!(fen_of(&approved.approved_amount), 3_000_000);
    let retried = app
        .clone()
        .approve_claim(request)
        .await
        .unwrap()
        .into_inner()
        .claim
        .unwrap();
    assert_eq!(retried, approved, "the retry gets the completed approval");
    let reservations = system.reservations(TEST_POOL, &claim.claim_id).await;
    assert_eq!(reservations.len(), 1);
    assert_eq!(fen_of(&reservations[0].committed_amount), 3_000_000);
    assert_claims_consistent(&system).await;
}
