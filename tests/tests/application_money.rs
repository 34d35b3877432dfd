//! The application service with the real rules, budget and notification services when money
//! runs short: the compute-voucher waitlist and a selection round that runs out of money.

mod application_support;

use application_support::*;
use subsidy_proto::application as pb;

/// A compute-voucher pool of 100,000.00.
const SMALL_VOUCHER_POOL: &str = "vouchers-small";

#[tokio::test]
async fn a_waitlisted_claim_is_promoted_when_a_rejection_returns_money() {
    // Proves strict submission order on the waitlist and promotion after a rejection.
    let stack = subsidy_tests::spawn_with(quick_application(&[(
        "SUBSIDY_APPLICATION_COMPUTE_VOUCHER_POOL_ID",
        SMALL_VOUCHER_POOL,
    )]))
    .await;
    create_pool(
        &stack,
        SMALL_VOUCHER_POOL,
        10_000_000,
        Some(ENTERPRISE_CAP_FEN),
    )
    .await;
    let mut app = app(&stack).await;
    let buyer = shandong(20);
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
    // 10,000.00 would fit, but nobody skips the head.
    let small = submitted(
        &mut app,
        "w-3",
        &buyer,
        contract("W-3", &seller(1), 20_000_000),
    )
    .await;
    assert_eq!(small.state(), pb::ClaimState::Waitlisted);
    assert_eq!(small.waitlist_position, 2);

    app.reject_claim(reject("w-r", &big.claim_id))
        .await
        .unwrap();
    let promoted = wait_claim_state(&app, &head.claim_id, pb::ClaimState::PendingReview).await;
    assert_eq!(fen_of(&promoted.reserved_amount), 5_000_000);
    let second = wait_claim_state(&app, &small.claim_id, pb::ClaimState::PendingReview).await;
    assert_eq!(fen_of(&second.reserved_amount), 1_000_000);
    assert!(
        history(&mut app, &head.claim_id)
            .await
            .last()
            .unwrap()
            .reason
            .contains("promoted from the waitlist")
    );
    assert_eq!(
        fen_of(&pool(&stack, SMALL_VOUCHER_POOL).await.held),
        6_000_000
    );
    assert_ledger_intact(&stack).await;
    stack.shutdown().await;
}

#[tokio::test]
async fn a_round_that_runs_out_of_money_mid_ranking_funds_the_next_partly_and_no_more() {
    // Proves finalisation in rank order while the pool lasts: full awards, one partial award
    // with what is left, then NOT_SELECTED.
    let stack = subsidy_tests::spawn_with(quick_application(&[])).await;
    // 25,000,000.00 for three requests of 10,000,000.00 and one of 1,000,000.00.
    create_pool(&stack, "data-infra-small", 2_500_000_000, None).await;
    let mut app = app(&stack).await;
    let round = app
        .create_selection_round(pb::CreateSelectionRoundRequest {
            request_id: "round-short".into(),
            pool_id: "data-infra-small".into(),
            title: "a round short of money".into(),
            submission_deadline_time: Some(in_seconds(3600)),
        })
        .await
        .unwrap()
        .into_inner()
        .round
        .unwrap();
    let expert_org = shandong(91);
    let mut ids = Vec::new();
    for (i, (requested_fen, mark)) in [
        (1_000_000_000, 90),
        (1_000_000_000, 85),
        (1_000_000_000, 80),
        (100_000_000, 75),
    ]
    .into_iter()
    .enumerate()
    {
        let who = shandong(30 + i);
        register(&mut app, &who).await;
        let proposal = app
            .submit_proposal(pb::SubmitProposalRequest {
                request_id: format!("short-{i}"),
                round_id: round.round_id.clone(),
                applicant_uscc: who.to_string(),
                category: pb::ProposalCategory::DataField as i32,
                title: format!("project {i}"),
                requested_amount: cny(requested_fen),
                summary: "A data field for the province.".into(),
                attachments: Vec::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .proposal
            .unwrap();
        assert_eq!(
            proposal.state(),
            pb::ProposalState::Eligible,
            "{proposal:?}"
        );
        app.score_proposal(pb::ScoreProposalRequest {
            request_id: format!("short-score-{i}"),
            proposal_id: proposal.proposal_id.clone(),
            expert_id: "expert-1".into(),
            expert_organization_uscc: expert_org.to_string(),
            score: mark,
            comment: String::new(),
        })
        .await
        .unwrap();
        ids.push(proposal.proposal_id);
    }
    app.close_selection_round(pb::CloseSelectionRoundRequest {
        request_id: "close-short".into(),
        round_id: round.round_id.clone(),
    })
    .await
    .unwrap();
    let result = app
        .finalize_selection_round(pb::FinalizeSelectionRoundRequest {
            request_id: "finalize-short".into(),
            round_id: round.round_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let awards: Vec<_> = result
        .awards
        .iter()
        .map(|a| {
            (
                a.proposal_id.clone(),
                fen_of(&a.awarded_amount),
                a.partially_funded,
            )
        })
        .collect();
    assert_eq!(
        awards,
        [
            (ids[0].clone(), 1_000_000_000, false),
            (ids[1].clone(), 1_000_000_000, false),
            (ids[2].clone(), 500_000_000, true)
        ]
    );
    assert_eq!(result.not_selected_count, 1);
    let last = app
        .get_proposal(pb::GetProposalRequest {
            proposal_id: ids[3].clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .proposal
        .unwrap();
    assert_eq!(last.state(), pb::ProposalState::NotSelected);
    // Finalising again awards nothing again.
    let status = app
        .finalize_selection_round(pb::FinalizeSelectionRoundRequest {
            request_id: "finalize-short-again".into(),
            round_id: round.round_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        subsidy_proto::status::reason(&status).as_deref(),
        Some("ROUND_ALREADY_FINALIZED")
    );
    let pool = pool(&stack, "data-infra-small").await;
    assert_eq!(fen_of(&pool.committed), 2_500_000_000);
    assert_eq!(pool.reservation_count, 3);
    assert_ledger_intact(&stack).await;
    stack.shutdown().await;
}
