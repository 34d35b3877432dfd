//! The application service with the real budget (and the real rules and notification services,
//! or the kit's scripted rules where a test switches the policy) when money runs short: the
//! compute-voucher waitlist, the partial shortfall policy, a hold that expires, and a selection
//! round that runs out of money.

mod application_support;

use application_support::*;
use subsidy_common::config::ServiceKind;
use subsidy_proto::application as pb;
use subsidy_proto::budget as bpb;
use subsidy_proto::status::reason;
use subsidy_testkit::requests::*;
use subsidy_testkit::rounds::*;
use subsidy_testkit::*;
use tonic::Code;

#[tokio::test]
async fn a_waitlisted_claim_is_promoted_in_submission_order_after_a_rejection() {
    // Proves strict FIFO: a later small claim does not skip the head even when it would fit,
    // and both are served, oldest first, when a rejection returns money.
    // A pool of 100,000.00.
    let stack = with_pool(10_000_000, LONG_HOLD_SECONDS, &[]).await;
    let mut app = stack.app().await;
    let buyer = shandong(8);
    register(&mut app, &buyer).await;
    // 80,000.00 held; 20,000.00 left.
    let big = submitted(
        &mut app,
        "w-1",
        &buyer,
        contract("W-1", &seller(1), 160_000_000),
    )
    .await;
    assert_eq!(big.state(), pb::ClaimState::PendingReview, "{big:?}");
    assert_eq!(fen_of(&big.reserved_amount), 8_000_000);
    // 50,000.00 does not fit: it waits.
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
    let status = approve_claim(&app, approve("w-a", &head.claim_id, 100_000_000))
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
    let pool = stack.pool(TEST_POOL).await;
    assert_eq!(fen_of(&pool.held), 6_000_000);
    let released = stack.reservations(TEST_POOL, &big.claim_id).await;
    assert_eq!(released[0].state(), bpb::ReservationState::Released);
    assert_claims_consistent(&stack, TEST_POOL).await;
    assert_ledger_intact(&stack).await;
    stack.shutdown().await;
}

#[tokio::test]
async fn under_the_partial_shortfall_policy_the_head_receives_what_is_left() {
    // Proves the policy switch `shortfall: partial`.
    let (stack, rules) = with_pool_and_scripted_rules(10_000_000, LONG_HOLD_SECONDS, &[]).await;
    rules.set_partial_claims(true);
    let mut app = stack.app().await;
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
    let approved = approve_claim(&app, approve("p-a", &partial.claim_id, 100_000_000))
        .await
        .unwrap()
        .into_inner()
        .claim
        .unwrap();
    assert_eq!(fen_of(&approved.approved_amount), 2_000_000);
    assert_claims_consistent(&stack, TEST_POOL).await;
    stack.shutdown().await;
}

#[tokio::test]
async fn an_expired_hold_moves_the_claim_to_expired_and_serves_the_waitlist() {
    // Proves that expiry by the budget is noticed and returns the money to waiting claims.
    // No background expiry: the test expires the hold itself with ExpireReservations. No
    // extension of the hold either (the application would keep it alive).
    let mut overrides =
        test_pool_application(&[("SUBSIDY_APPLICATION_HOLD_EXTEND_MARGIN_SECONDS", "0")]);
    overrides.insert(
        ServiceKind::Budget,
        vec![("SUBSIDY_BUDGET_EXPIRY_INTERVAL_MS".into(), "3600000".into())],
    );
    let stack = with_pool_and(overrides, 10_000_000, 1).await;
    let mut app = stack.app().await;
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
    let mut budget = stack.budget().await;
    eventually("the first hold to expire", || {
        let mut budget = budget.clone();
        async move {
            let expired = budget
                .expire_reservations(bpb::ExpireReservationsRequest {
                    limit: 1,
                    request_id: format!("expire-{}", uuid::Uuid::new_v4()),
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
    let status = approve_claim(&app, approve("e-a", &first.claim_id, 160_000_000))
        .await
        .unwrap_err();
    assert_eq!(reason(&status).as_deref(), Some("TRANSITION_NOT_ALLOWED"));
    let _ = budget
        .list_pools(bpb::ListPoolsRequest::default())
        .await
        .unwrap();
    assert_claims_consistent(&stack, TEST_POOL).await;
    stack.shutdown().await;
}

#[tokio::test]
async fn a_round_that_runs_out_of_money_funds_the_next_in_rank_partly_and_no_more() {
    // Proves ranking by mean score with the pool running out mid-ranking: full awards, one
    // partial award with what is left, then NOT_SELECTED; finalising again awards nothing
    // again.
    let stack = subsidy_tests::spawn_with(quick_application(&[])).await;
    // 25,000,000.00 for three requests of 10,000,000.00 and one of 1,000,000.00.
    let (mut app, round) = open_round(&stack, 2_500_000_000).await;
    let expert_org = shandong(60);
    let mut proposals = Vec::new();
    for (i, (requested, mark)) in [
        (1_000_000_000, 90),
        (1_000_000_000, 80),
        (1_000_000_000, 70),
        (100_000_000, 60),
    ]
    .into_iter()
    .enumerate()
    {
        let who = shandong(10 + i);
        register(&mut app, &who).await;
        let proposal = propose(&mut app, &round.round_id, &who, &format!("p{i}"), requested).await;
        assert_eq!(
            proposal.state(),
            pb::ProposalState::Eligible,
            "{proposal:?}"
        );
        score(&mut app, &proposal.proposal_id, "e1", &expert_org, mark)
            .await
            .unwrap();
        proposals.push(proposal);
    }
    // An eligible proposal nobody scored is not ranked.
    let unscored_owner = shandong(20);
    register(&mut app, &unscored_owner).await;
    let unscored = propose(&mut app, &round.round_id, &unscored_owner, "unscored", 100).await;
    close(&mut app, &round.round_id).await;
    let result = app
        .finalize_selection_round(finalize("f-2", &round.round_id))
        .await
        .unwrap()
        .into_inner();
    let awarded: Vec<_> = result
        .awards
        .iter()
        .map(|a| {
            (
                a.proposal_id.clone(),
                a.rank,
                fen_of(&a.awarded_amount),
                a.partially_funded,
            )
        })
        .collect();
    assert_eq!(
        awarded,
        [
            (proposals[0].proposal_id.clone(), 1, 1_000_000_000, false),
            (proposals[1].proposal_id.clone(), 2, 1_000_000_000, false),
            (proposals[2].proposal_id.clone(), 3, 500_000_000, true)
        ]
    );
    assert_eq!(result.not_selected_count, 2);
    let last = get_proposal(&mut app, &proposals[3].proposal_id).await;
    assert_eq!(last.state(), pb::ProposalState::NotSelected);
    assert_eq!(last.rank, 4);
    let unscored = get_proposal(&mut app, &unscored.proposal_id).await;
    assert_eq!(unscored.state(), pb::ProposalState::NotSelected);
    assert_eq!(unscored.rank, 0);
    // Finalising again awards nothing again.
    let status = app
        .finalize_selection_round(finalize("f-2-again", &round.round_id))
        .await
        .unwrap_err();
    assert_eq!(reason(&status).as_deref(), Some("ROUND_ALREADY_FINALIZED"));
    let pool = stack.pool(ROUND_POOL).await;
    assert_eq!(fen_of(&pool.committed), 2_500_000_000);
    assert_eq!(fen_of(&pool.available), 0);
    assert_eq!(pool.reservation_count, 3);
    assert_ledger_intact(&stack).await;
    stack.shutdown().await;
}
