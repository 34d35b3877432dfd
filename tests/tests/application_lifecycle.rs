//! The application service with the real rules, budget and notification services: the whole
//! life cycle of both programs, the enterprise cap across claims, and duplicate contracts.

mod application_support;

use application_support::*;
use subsidy_proto::application as pb;
use subsidy_proto::budget as bpb;
use subsidy_proto::notification as npb;
use subsidy_proto::status::reason;
use tonic::Code;

#[tokio::test]
async fn a_compute_voucher_claim_goes_through_its_whole_life_cycle_across_the_four_services() {
    // Proves submit → rules decision → budget hold → approval with recompute and partial
    // commit → payment, with the history, the budget's ledger and the delivered events.
    let stack = subsidy_tests::spawn_with(quick_application(&[])).await;
    let mut app = app(&stack).await;
    let buyer = shandong(1);
    register(&mut app, &buyer).await;

    // 5% of 2,000,000.00 is 100,000.00.
    let claim = submitted(
        &mut app,
        "life-1",
        &buyer,
        contract("LIFE-1", &seller(1), 200_000_000),
    )
    .await;
    assert_eq!(claim.state(), pb::ClaimState::PendingReview, "{claim:?}");
    let decision = claim.decision.clone().unwrap();
    assert!(decision.eligible);
    assert_eq!(decision.policy_id, "compute-voucher");
    assert_eq!(decision.rate_basis_points, 500);
    assert_eq!(fen_of(&decision.entitlement), 10_000_000);
    assert_eq!(fen_of(&claim.reserved_amount), 10_000_000);

    // Verified 1,500,000.00: 75,000.00 committed, 25,000.00 back to the pool.
    let approved = app
        .approve_claim(approve("life-a", &claim.claim_id, 150_000_000))
        .await
        .unwrap()
        .into_inner()
        .claim
        .unwrap();
    assert_eq!(approved.state(), pb::ClaimState::Approved);
    assert_eq!(fen_of(&approved.approved_amount), 7_500_000);
    let held = reservations(&stack, VOUCHER_POOL, &claim.claim_id).await;
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].state(), bpb::ReservationState::Committed);
    assert_eq!(fen_of(&held[0].committed_amount), 7_500_000);
    assert_eq!(fen_of(&held[0].released_amount), 2_500_000);

    let paid = app
        .record_claim_disbursement(pb::RecordClaimDisbursementRequest {
            request_id: "life-d".into(),
            claim_id: claim.claim_id.clone(),
            payment_reference: "PAY-LIFE-1".into(),
            payment_date: Some(today_shanghai()),
            amount: cny(7_500_000),
        })
        .await
        .unwrap()
        .into_inner()
        .claim
        .unwrap();
    assert_eq!(paid.state(), pb::ClaimState::Disbursed);
    let entries = history(&mut app, &claim.claim_id).await;
    assert_eq!(entries.len(), 5, "{entries:?}");
    assert_eq!(paid.revision, 5);
    assert!(entries[1].reason.contains(&decision.decision_id));

    let events = wait_events(
        &stack,
        &claim.claim_id,
        &[
            npb::EventType::ClaimSubmitted,
            npb::EventType::ClaimReserved,
            npb::EventType::ClaimApproved,
            npb::EventType::ClaimDisbursed,
        ],
    )
    .await;
    assert_eq!(fen_of(&events[2].amount), 7_500_000);
    assert_eq!(events[2].recipient_email, "ops@example.cn");
    assert_ledger_intact(&stack).await;
    stack.shutdown().await;
}

#[tokio::test]
async fn a_data_infrastructure_round_goes_from_opening_to_payment_across_the_four_services() {
    // Proves round opening, screening by rules, expert scores, ranking by rules, reserve and
    // commit per award, NOT_SELECTED for the rest, and payment.
    let stack = subsidy_tests::spawn_with(quick_application(&[])).await;
    let mut app = app(&stack).await;
    let (a, b, outsider) = (
        shandong(10),
        shandong(11),
        subsidy_common::uscc::complete("91110100MA0000012"),
    );
    for who in [&a, &b, &outsider] {
        register(&mut app, who).await;
    }
    let round = app
        .create_selection_round(pb::CreateSelectionRoundRequest {
            request_id: "round-life".into(),
            pool_id: "data-infra-2025".into(),
            title: "2025 benchmark projects".into(),
            submission_deadline_time: Some(in_seconds(3600)),
        })
        .await
        .unwrap()
        .into_inner()
        .round
        .unwrap();
    let mut proposals = Vec::new();
    for (who, title, requested_fen, category) in [
        (
            &a,
            "Shandong trusted data space",
            800_000_000,
            pb::ProposalCategory::TrustedDataSpace,
        ),
        (
            &b,
            "Qingdao annotation base",
            300_000_000,
            pb::ProposalCategory::DataAnnotationBase,
        ),
        (
            &outsider,
            "Beijing data field",
            100_000_000,
            pb::ProposalCategory::DataField,
        ),
    ] {
        let proposal = app
            .submit_proposal(pb::SubmitProposalRequest {
                request_id: format!("propose-{title}").replace(' ', "-"),
                round_id: round.round_id.clone(),
                applicant_uscc: who.to_string(),
                category: category as i32,
                title: title.into(),
                requested_amount: cny(requested_fen),
                summary: "Data infrastructure of high quality for the province.".into(),
                attachments: Vec::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .proposal
            .unwrap();
        proposals.push(proposal);
    }
    assert_eq!(proposals[0].state(), pb::ProposalState::Eligible);
    assert_eq!(proposals[1].state(), pb::ProposalState::Eligible);
    assert_eq!(proposals[2].state(), pb::ProposalState::Ineligible);
    let expert_org = shandong(90);
    for (proposal, marks) in [(&proposals[0], [70, 80]), (&proposals[1], [90, 95])] {
        for (i, mark) in marks.into_iter().enumerate() {
            app.score_proposal(pb::ScoreProposalRequest {
                request_id: format!("score-{}-{i}", proposal.proposal_id),
                proposal_id: proposal.proposal_id.clone(),
                expert_id: format!("expert-{i}"),
                expert_organization_uscc: expert_org.to_string(),
                score: mark,
                comment: String::new(),
            })
            .await
            .unwrap();
        }
    }
    app.close_selection_round(pb::CloseSelectionRoundRequest {
        request_id: "close-life".into(),
        round_id: round.round_id.clone(),
    })
    .await
    .unwrap();
    let result = app
        .finalize_selection_round(pb::FinalizeSelectionRoundRequest {
            request_id: "finalize-life".into(),
            round_id: round.round_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let awards: Vec<_> = result
        .awards
        .iter()
        .map(|award| {
            (
                award.proposal_id.clone(),
                award.rank,
                fen_of(&award.awarded_amount),
            )
        })
        .collect();
    assert_eq!(
        awards,
        [
            (proposals[1].proposal_id.clone(), 1, 300_000_000),
            (proposals[0].proposal_id.clone(), 2, 800_000_000)
        ]
    );
    assert_eq!(
        fen_of(&pool(&stack, "data-infra-2025").await.committed),
        1_100_000_000
    );
    let paid = app
        .record_proposal_disbursement(pb::RecordProposalDisbursementRequest {
            request_id: "pay-round-life".into(),
            proposal_id: proposals[1].proposal_id.clone(),
            payment_reference: "PAY-DI-1".into(),
            payment_date: Some(today_shanghai()),
            amount: cny(300_000_000),
        })
        .await
        .unwrap()
        .into_inner()
        .proposal
        .unwrap();
    assert_eq!(paid.state(), pb::ProposalState::Disbursed);
    wait_events(
        &stack,
        &proposals[1].proposal_id,
        &[
            npb::EventType::ProposalSubmitted,
            npb::EventType::ProposalAwarded,
            npb::EventType::ProposalDisbursed,
        ],
    )
    .await;
    wait_events(
        &stack,
        &proposals[2].proposal_id,
        &[
            npb::EventType::ProposalSubmitted,
            npb::EventType::ProposalIneligible,
        ],
    )
    .await;
    assert_ledger_intact(&stack).await;
    stack.shutdown().await;
}

#[tokio::test]
async fn the_5_000_000_cap_is_reached_across_several_claims_of_one_enterprise() {
    // Proves the cumulative enterprise cap across claims: cut to what remains, then refused.
    let stack = subsidy_tests::spawn_with(quick_application(&[])).await;
    let mut app = app(&stack).await;
    let buyer = shandong(2);
    register(&mut app, &buyer).await;
    let mut reserved = Vec::new();
    // Each contract of 40,000,000.00 is entitled to 2,000,000.00.
    for i in 0..3 {
        let claim = submitted(
            &mut app,
            &format!("cap-{i}"),
            &buyer,
            contract(&format!("CAP-{i}"), &seller(1), 4_000_000_000),
        )
        .await;
        assert_eq!(claim.state(), pb::ClaimState::PendingReview, "{claim:?}");
        reserved.push(fen_of(&claim.reserved_amount));
    }
    assert_eq!(reserved, [200_000_000, 200_000_000, 100_000_000]);
    let refused = submitted(
        &mut app,
        "cap-3",
        &buyer,
        contract("CAP-3", &seller(1), 4_000_000_000),
    )
    .await;
    assert_eq!(refused.state(), pb::ClaimState::Ineligible);
    let codes: Vec<_> = refused
        .decision
        .unwrap()
        .failed_reasons
        .into_iter()
        .map(|r| r.code)
        .collect();
    assert_eq!(codes, ["ENTERPRISE_CAP_REACHED"]);
    let usage = budget(&stack)
        .await
        .get_beneficiary_usage(bpb::GetBeneficiaryUsageRequest {
            pool_id: VOUCHER_POOL.into(),
            beneficiary_uscc: buyer.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .usage
        .unwrap();
    assert_eq!(
        fen_of(&usage.held) + fen_of(&usage.committed),
        ENTERPRISE_CAP_FEN
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn a_second_claim_on_the_same_contract_is_refused_as_a_duplicate() {
    // Proves that seller USCC and contract number identify a contract across all claims, and
    // that a withdrawn claim frees it.
    let stack = subsidy_tests::spawn_with(quick_application(&[])).await;
    let mut app = app(&stack).await;
    let (buyer, other) = (shandong(3), shandong(4));
    register(&mut app, &buyer).await;
    register(&mut app, &other).await;
    let first = submitted(
        &mut app,
        "dup-1",
        &buyer,
        contract("DUP-1", &seller(1), 20_000_000),
    )
    .await;
    let status = app
        .submit_claim(submit(
            "dup-2",
            &other,
            contract("DUP-1", &seller(1), 20_000_000),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(reason(&status).as_deref(), Some("DUPLICATE_CONTRACT"));
    app.withdraw_claim(pb::WithdrawClaimRequest {
        request_id: "dup-w".into(),
        claim_id: first.claim_id.clone(),
        reason: "filed by the wrong subsidiary".into(),
    })
    .await
    .unwrap();
    let again = submitted(
        &mut app,
        "dup-3",
        &other,
        contract("DUP-1", &seller(1), 20_000_000),
    )
    .await;
    assert_eq!(again.state(), pb::ClaimState::PendingReview);
    eventually("the first hold to be released", || async {
        let held = reservations(&stack, VOUCHER_POOL, &first.claim_id).await;
        (held.len() == 1 && held[0].state() == bpb::ReservationState::Released).then_some(())
    })
    .await;
    stack.shutdown().await;
}
