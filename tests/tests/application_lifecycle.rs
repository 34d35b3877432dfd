//! The application service with the real rules, budget and notification services: the whole
//! life cycle of both programs, the enterprise cap across claims (also under concurrent
//! claims), duplicate contracts, and a round finalised twice.

mod application_support;

use application_support::*;
use futures::future::join_all;
use subsidy_proto::application as pb;
use subsidy_proto::budget as bpb;
use subsidy_proto::notification as npb;
use subsidy_proto::status::reason;
use subsidy_testkit::requests::*;
use subsidy_testkit::rounds::*;
use subsidy_testkit::*;
use tonic::Code;

#[tokio::test]
async fn a_claim_goes_from_submission_to_payment_with_its_whole_history_and_events() {
    // Proves the claim life cycle: reserve on submission, recompute and partial commit on
    // approval, payment; each step in the history and delivered as an event, in order. Across
    // the four real services: submit → rules decision → budget hold → approval with recompute
    // and partial commit → payment, with the budget's ledger intact.
    let stack = subsidy_tests::spawn_with(quick_application(&[])).await;
    let mut app = stack.app().await;
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
    assert_eq!(claim.state(), pb::ClaimState::PendingReview, "{claim:?}");
    assert!(claim.claim_id.starts_with("claim-"));
    assert_eq!(fen_of(&claim.reserved_amount), 5_000_000);
    let decision = claim.decision.clone().unwrap();
    assert!(decision.eligible);
    assert_eq!(decision.policy_id, "compute-voucher");
    assert_eq!(decision.rate_basis_points, 500);
    assert_eq!(fen_of(&decision.entitlement), 5_000_000);
    let held = stack.reservations(VOUCHER_POOL, &claim.claim_id).await;
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].reservation_id, claim.reservation_id);
    assert_eq!(held[0].state(), bpb::ReservationState::Held);

    // Verified 800,000.00 invoiced and paid: 40,000.00 committed, 10,000.00 back to the pool.
    let approved = approve_claim(
        &app,
        approve_rated("a-1", &claim.claim_id, 80_000_000, pb::BenefitRating::High),
    )
    .await
    .unwrap()
    .into_inner()
    .claim
    .unwrap();
    assert_eq!(approved.state(), pb::ClaimState::Approved);
    assert_eq!(fen_of(&approved.approved_amount), 4_000_000);
    assert_eq!(fen_of(&approved.verified_paid_amount), 80_000_000);
    assert_eq!(approved.reviewer_id, subsidy_testkit::auth::OPERATOR);
    let settled = stack.reservations(VOUCHER_POOL, &claim.claim_id).await;
    assert_eq!(settled.len(), 1);
    assert_eq!(settled[0].state(), bpb::ReservationState::Committed);
    assert_eq!(fen_of(&settled[0].committed_amount), 4_000_000);
    assert_eq!(fen_of(&settled[0].released_amount), 1_000_000);
    let pool = stack.pool(VOUCHER_POOL).await;
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
            // The invoice added by the applicant, then verified by the reviewer.
            "CLAIM_STATE_PENDING_REVIEW>CLAIM_STATE_PENDING_REVIEW",
            "CLAIM_STATE_PENDING_REVIEW>CLAIM_STATE_PENDING_REVIEW",
            "CLAIM_STATE_PENDING_REVIEW>CLAIM_STATE_APPROVED",
            "CLAIM_STATE_APPROVED>CLAIM_STATE_DISBURSED",
        ]
    );
    assert_eq!(entries.len(), 7, "{entries:?}");
    assert_eq!(
        entries.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6, 7]
    );
    assert_eq!(paid.revision, 7);
    assert_eq!(entries[0].request_id, "c-1");
    assert_eq!(entries[1].actor, "system");
    assert!(entries[1].reason.contains(&decision.decision_id));
    assert!(
        entries[3].reason.starts_with("invoices added"),
        "{entries:?}"
    );
    assert!(entries[4].reason.contains("verified"), "{entries:?}");
    assert_eq!(entries[5].request_id, "a-1");

    let events = wait_event_count(&stack, &claim.claim_id, 5).await;
    assert_eq!(
        types(&events),
        [
            npb::EventType::ClaimSubmitted,
            npb::EventType::ClaimReserved,
            npb::EventType::ClaimApproved,
            npb::EventType::AwardPublished,
            npb::EventType::ClaimDisbursed,
        ]
    );
    let approved_event = events
        .into_iter()
        .find(|e| e.r#type() == npb::EventType::ClaimApproved)
        .unwrap();
    assert_eq!(fen_of(&approved_event.amount), 4_000_000);
    assert_eq!(approved_event.recipient_email, "ops@example.cn");
    assert_eq!(approved_event.enterprise_uscc, buyer.to_string());
    assert_eq!(approved_event.program(), npb::Program::ComputeVoucher);
    assert_claims_consistent(&stack, VOUCHER_POOL).await;
    assert_ledger_intact(&stack).await;
    stack.shutdown().await;
}

#[tokio::test]
async fn a_round_runs_from_opening_to_payment_of_its_awards() {
    // Proves the proposal life cycle: screening, scoring, ranking, award by reserve and
    // commit, payment; each in the history and the events. Across the four real services:
    // screening and ranking by rules, reserve and commit per award in the budget, with its
    // ledger intact.
    let stack = subsidy_tests::spawn_with(quick_application(&[])).await;
    // 40,000,000.00 for the round.
    let (mut app, round) = open_round(&stack, 4_000_000_000).await;
    let (a, b, outsider) = (shandong(1), shandong(2), beijing(3));
    let expert_org = shandong(50);
    for who in [&a, &b, &outsider] {
        register(&mut app, who).await;
    }
    let first = propose(&mut app, &round.round_id, &a, "space", 800_000_000).await;
    let second = propose(&mut app, &round.round_id, &b, "field", 500_000_000).await;
    let ineligible = propose(&mut app, &round.round_id, &outsider, "far", 100_000_000).await;
    let too_big = propose(&mut app, &round.round_id, &b, "huge", 1_000_000_001).await;
    assert_eq!(first.state(), pb::ProposalState::Eligible);
    assert_eq!(second.state(), pb::ProposalState::Eligible);
    assert_eq!(ineligible.state(), pb::ProposalState::Ineligible);
    assert_eq!(too_big.state(), pb::ProposalState::Ineligible);
    score(&mut app, &first.proposal_id, "e1", &expert_org, 80)
        .await
        .unwrap();
    score(&mut app, &first.proposal_id, "e2", &expert_org, 90)
        .await
        .unwrap();
    score(&mut app, &second.proposal_id, "e1", &expert_org, 95)
        .await
        .unwrap();
    // A later score by the same expert replaces the earlier one.
    let rescored = score(&mut app, &second.proposal_id, "e1", &expert_org, 70)
        .await
        .unwrap();
    assert_eq!((rescored.score_total, rescored.score_count), (70, 1));
    let status = score(&mut app, &ineligible.proposal_id, "e1", &expert_org, 50)
        .await
        .unwrap_err();
    assert_eq!(reason(&status).as_deref(), Some("TRANSITION_NOT_ALLOWED"));

    let status = app
        .finalize_selection_round(finalize("f-early", &round.round_id))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status).as_deref(), Some("TRANSITION_NOT_ALLOWED"));
    close(&mut app, &round.round_id).await;
    let result = app
        .finalize_selection_round(finalize("f-1", &round.round_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        result.round.as_ref().unwrap().state(),
        pb::SelectionRoundState::Finalized
    );
    let ranked: Vec<_> = result
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
        ranked,
        [
            (first.proposal_id.clone(), 1, 800_000_000),
            (second.proposal_id.clone(), 2, 500_000_000)
        ]
    );
    assert_eq!(result.round.as_ref().unwrap().award_count, 2);
    assert_eq!(
        fen_of(&result.round.as_ref().unwrap().awarded_total),
        1_300_000_000
    );
    for award in &result.awards {
        let reservation = stack
            .budget()
            .await
            .get_reservation(bpb::GetReservationRequest {
                reservation_id: award.reservation_id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .reservation
            .unwrap();
        assert_eq!(reservation.state(), bpb::ReservationState::Committed);
        assert_eq!(
            fen_of(&reservation.committed_amount),
            fen_of(&award.awarded_amount)
        );
    }
    assert_eq!(
        fen_of(&stack.pool(ROUND_POOL).await.committed),
        1_300_000_000
    );

    let paid = app
        .record_proposal_disbursement(pb::RecordProposalDisbursementRequest {
            request_id: "pay-1".into(),
            proposal_id: first.proposal_id.clone(),
            payment_reference: "PAY-DI-1".into(),
            payment_date: Some(today_shanghai()),
            amount: cny(800_000_000),
        })
        .await
        .unwrap()
        .into_inner()
        .proposal
        .unwrap();
    assert_eq!(paid.state(), pb::ProposalState::Disbursed);
    let entries = history(&mut app, &first.proposal_id).await;
    assert_eq!(entries.len(), 6, "{entries:?}");
    assert!(entries[4].reason.contains("awarded"));

    let events = wait_event_count(&stack, &first.proposal_id, 4).await;
    assert_eq!(
        types(&events),
        [
            npb::EventType::ProposalSubmitted,
            npb::EventType::ProposalAwarded,
            npb::EventType::AwardPublished,
            npb::EventType::ProposalDisbursed
        ]
    );
    wait_events(
        &stack,
        &ineligible.proposal_id,
        &[
            npb::EventType::ProposalSubmitted,
            npb::EventType::ProposalIneligible,
        ],
    )
    .await;
    eventually("the round's event", || {
        let stack = &stack;
        let round_id = round.round_id.clone();
        async move {
            events_of(stack, "")
                .await
                .iter()
                .any(|e| e.r#type() == npb::EventType::RoundFinalized && e.round_id == round_id)
                .then_some(())
        }
    })
    .await;
    assert_ledger_intact(&stack).await;
    stack.shutdown().await;
}

#[tokio::test]
async fn the_enterprise_cap_of_5_000_000_is_reached_across_several_claims() {
    // Proves the cumulative cap: entitlements are cut to what remains, then refused.
    let stack = subsidy_tests::spawn_with(quick_application(&[])).await;
    let mut app = stack.app().await;
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
    assert_eq!(first.state(), pb::ClaimState::PendingReview, "{first:?}");
    assert_eq!(second.state(), pb::ClaimState::PendingReview, "{second:?}");
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
        stack
            .reservations(VOUCHER_POOL, &fourth.claim_id)
            .await
            .is_empty()
    );
    let usage = stack
        .budget()
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
    assert_eq!(fen_of(&usage.held), ENTERPRISE_CAP_FEN);
    assert_eq!(
        fen_of(&usage.held) + fen_of(&usage.committed),
        ENTERPRISE_CAP_FEN
    );

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
    assert_claims_consistent(&stack, VOUCHER_POOL).await;
    stack.shutdown().await;
}

#[tokio::test]
async fn concurrent_claims_of_one_enterprise_never_exceed_its_cap() {
    // Proves that claims racing for the last of an enterprise's cap are decided again on the
    // usage the budget reports, never holding more than the cap.
    let stack = subsidy_tests::spawn_with(quick_application(&[])).await;
    let mut app = stack.app().await;
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
        fen_of(&stack.pool(VOUCHER_POOL).await.held),
        ENTERPRISE_CAP_FEN
    );
    assert_claims_consistent(&stack, VOUCHER_POOL).await;
    stack.shutdown().await;
}

#[tokio::test]
async fn a_second_claim_on_the_same_contract_is_rejected_unless_the_first_was_withdrawn() {
    // Proves duplicate detection by seller USCC and contract number, and that a withdrawal
    // frees both the contract and the money.
    let stack = subsidy_tests::spawn_with(quick_application(&[])).await;
    let mut app = stack.app().await;
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
        let stack = &stack;
        let claim_id = first.claim_id.clone();
        async move {
            let held = stack.reservations(VOUCHER_POOL, &claim_id).await;
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
    assert_claims_consistent(&stack, VOUCHER_POOL).await;
    stack.shutdown().await;
}

#[tokio::test]
async fn finalising_twice_awards_nothing_twice() {
    // Proves a replay returns the original awards and another finalisation is refused,
    // with exactly one reservation per award.
    let stack = subsidy_tests::spawn_with(quick_application(&[])).await;
    let (mut app, round) = open_round(&stack, 4_000_000_000).await;
    let who = shandong(30);
    register(&mut app, &who).await;
    let proposal = propose(&mut app, &round.round_id, &who, "once", 300_000_000).await;
    score(&mut app, &proposal.proposal_id, "e1", &shandong(61), 75)
        .await
        .unwrap();
    close(&mut app, &round.round_id).await;
    let first = app
        .finalize_selection_round(finalize("f-3", &round.round_id))
        .await
        .unwrap()
        .into_inner();
    let replay = app
        .finalize_selection_round(finalize("f-3", &round.round_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replay, first);
    let status = app
        .finalize_selection_round(finalize("f-4", &round.round_id))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status).as_deref(), Some("ROUND_ALREADY_FINALIZED"));
    assert_eq!(
        stack
            .reservations(ROUND_POOL, &proposal.proposal_id)
            .await
            .len(),
        1
    );
    assert_eq!(fen_of(&stack.pool(ROUND_POOL).await.committed), 300_000_000);
    let status = score(&mut app, &proposal.proposal_id, "e2", &shandong(61), 10)
        .await
        .unwrap_err();
    assert_eq!(reason(&status).as_deref(), Some("ROUND_ALREADY_FINALIZED"));
    stack.shutdown().await;
}
