//! Data-infrastructure selection rounds through the application service, against the real
//! budget service and scripted rules and notification services.

mod support;

use subsidy_proto::application as pb;
use subsidy_proto::application::application_service_client::ApplicationServiceClient;
use subsidy_proto::budget as bpb;
use subsidy_proto::notification as npb;
use subsidy_proto::status::{reason, violated_fields};
use support::*;
use tonic::Code;
use tonic::transport::Channel;

/// The round's pool.
const ROUND_POOL: &str = "data-infra-test";
/// A deadline far enough ahead for a test, in seconds.
const DEADLINE_SECONDS: i64 = 3600;

async fn open_round(
    system: &System,
    total_fen: i64,
) -> (ApplicationServiceClient<Channel>, pb::SelectionRound) {
    system
        .create_pool_capped(ROUND_POOL, total_fen, 3600, None)
        .await;
    let mut app = system.app().await;
    let round = app
        .create_selection_round(pb::CreateSelectionRoundRequest {
            request_id: "round-1".into(),
            pool_id: ROUND_POOL.into(),
            title: "2025 benchmark projects, first round".into(),
            submission_deadline_time: Some(in_seconds(DEADLINE_SECONDS)),
        })
        .await
        .unwrap()
        .into_inner()
        .round
        .unwrap();
    assert_eq!(round.state(), pb::SelectionRoundState::Open);
    (app, round)
}

async fn propose(
    app: &mut ApplicationServiceClient<Channel>,
    round_id: &str,
    applicant: &subsidy_common::Uscc,
    title: &str,
    requested_fen: i64,
) -> pb::Proposal {
    app.submit_proposal(pb::SubmitProposalRequest {
        request_id: format!("propose-{title}"),
        round_id: round_id.into(),
        applicant_uscc: applicant.to_string(),
        category: pb::ProposalCategory::TrustedDataSpace as i32,
        title: title.into(),
        requested_amount: cny(requested_fen),
        summary: "A trusted data space for the province's manufacturers.".into(),
        attachments: Vec::new(),
    })
    .await
    .expect("submit a proposal")
    .into_inner()
    .proposal
    .unwrap()
}

async fn score(
    app: &mut ApplicationServiceClient<Channel>,
    proposal_id: &str,
    expert: &str,
    organization: &subsidy_common::Uscc,
    value: u32,
) -> Result<pb::Proposal, tonic::Status> {
    app.score_proposal(pb::ScoreProposalRequest {
        request_id: format!("score-{proposal_id}-{expert}-{value}"),
        proposal_id: proposal_id.into(),
        expert_id: expert.into(),
        expert_organization_uscc: organization.to_string(),
        score: value,
        comment: String::new(),
    })
    .await
    .map(|r| r.into_inner().proposal.unwrap())
}

async fn close(app: &mut ApplicationServiceClient<Channel>, round_id: &str) {
    app.close_selection_round(pb::CloseSelectionRoundRequest {
        request_id: format!("close-{round_id}"),
        round_id: round_id.into(),
    })
    .await
    .unwrap();
}

fn finalize(request_id: &str, round_id: &str) -> pb::FinalizeSelectionRoundRequest {
    pb::FinalizeSelectionRoundRequest {
        request_id: request_id.into(),
        round_id: round_id.into(),
    }
}

#[tokio::test]
async fn a_round_runs_from_opening_to_payment_of_its_awards() {
    // Proves the proposal life cycle: screening, scoring, ranking, award by reserve and
    // commit, payment; each in the history and the events.
    let system = System::start(&[]).await;
    // 40,000,000.00 for the round.
    let (mut app, round) = open_round(&system, 4_000_000_000).await;
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
        let reservation = system
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
        fen_of(&system.pool(ROUND_POOL).await.committed),
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

    let events = eventually("the proposal's events", || {
        let types = system.notification.types_for(&first.proposal_id);
        async move { (types.len() == 3).then_some(types) }
    })
    .await;
    assert_eq!(
        events,
        [
            npb::EventType::ProposalSubmitted,
            npb::EventType::ProposalAwarded,
            npb::EventType::ProposalDisbursed
        ]
    );
    eventually("the round's event", || {
        let events = system.notification.events();
        let round_id = round.round_id.clone();
        async move {
            events
                .iter()
                .any(|e| e.r#type() == npb::EventType::RoundFinalized && e.round_id == round_id)
                .then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn a_round_that_runs_out_of_money_funds_the_next_in_rank_partly_and_no_more() {
    // Proves ranking by mean score with the pool running out mid-ranking.
    let system = System::start(&[]).await;
    // 25,000,000.00 for three requests of 10,000,000.00 and one of 1,000,000.00.
    let (mut app, round) = open_round(&system, 2_500_000_000).await;
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
        .map(|a| (a.rank, fen_of(&a.awarded_amount), a.partially_funded))
        .collect();
    assert_eq!(
        awarded,
        [
            (1, 1_000_000_000, false),
            (2, 1_000_000_000, false),
            (3, 500_000_000, true)
        ]
    );
    assert_eq!(result.not_selected_count, 2);
    let last = app
        .get_proposal(pb::GetProposalRequest {
            proposal_id: proposals[3].proposal_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .proposal
        .unwrap();
    assert_eq!(last.state(), pb::ProposalState::NotSelected);
    assert_eq!(last.rank, 4);
    let unscored = app
        .get_proposal(pb::GetProposalRequest {
            proposal_id: unscored.proposal_id,
        })
        .await
        .unwrap()
        .into_inner()
        .proposal
        .unwrap();
    assert_eq!(unscored.state(), pb::ProposalState::NotSelected);
    assert_eq!(unscored.rank, 0);
    let pool = system.pool(ROUND_POOL).await;
    assert_eq!(fen_of(&pool.committed), 2_500_000_000);
    assert_eq!(fen_of(&pool.available), 0);
}

#[tokio::test]
async fn finalising_twice_awards_nothing_twice() {
    // Proves a replay returns the original awards and another finalisation is refused,
    // with exactly one reservation per award.
    let system = System::start(&[]).await;
    let (mut app, round) = open_round(&system, 4_000_000_000).await;
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
        system
            .reservations(ROUND_POOL, &proposal.proposal_id)
            .await
            .len(),
        1
    );
    assert_eq!(
        fen_of(&system.pool(ROUND_POOL).await.committed),
        300_000_000
    );
    let status = score(&mut app, &proposal.proposal_id, "e2", &shandong(61), 10)
        .await
        .unwrap_err();
    assert_eq!(reason(&status).as_deref(), Some("ROUND_ALREADY_FINALIZED"));
}

#[tokio::test]
async fn an_expert_cannot_score_a_proposal_of_their_own_organisation() {
    // Proves the conflict-of-interest check and score validation.
    let system = System::start(&[]).await;
    let (mut app, round) = open_round(&system, 4_000_000_000).await;
    let who = shandong(31);
    register(&mut app, &who).await;
    let proposal = propose(&mut app, &round.round_id, &who, "mine", 300_000_000).await;
    let status = score(&mut app, &proposal.proposal_id, "e1", &who, 100)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status).as_deref(), Some("CONFLICT_OF_INTEREST"));
    let status = score(&mut app, &proposal.proposal_id, "e1", &shandong(62), 101)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["score"]);
    let unchanged = app
        .get_proposal(pb::GetProposalRequest {
            proposal_id: proposal.proposal_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .proposal
        .unwrap();
    assert_eq!(unchanged, proposal);
}

#[tokio::test]
async fn a_closed_round_accepts_no_proposals_and_an_unknown_pool_opens_no_round() {
    // Proves ROUND_CLOSED after closing, and POOL_NOT_FOUND for a pool the budget lacks.
    let system = System::start(&[]).await;
    let (mut app, round) = open_round(&system, 4_000_000_000).await;
    let who = shandong(32);
    register(&mut app, &who).await;
    close(&mut app, &round.round_id).await;
    let status = app
        .submit_proposal(pb::SubmitProposalRequest {
            request_id: "late".into(),
            round_id: round.round_id.clone(),
            applicant_uscc: who.to_string(),
            category: pb::ProposalCategory::DataField as i32,
            title: "late".into(),
            requested_amount: cny(100),
            summary: "late".into(),
            attachments: Vec::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status).as_deref(), Some("ROUND_CLOSED"));
    let status = app
        .create_selection_round(pb::CreateSelectionRoundRequest {
            request_id: "round-x".into(),
            pool_id: "no-such-pool".into(),
            title: "x".into(),
            submission_deadline_time: Some(in_seconds(DEADLINE_SECONDS)),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(reason(&status).as_deref(), Some("POOL_NOT_FOUND"));
    let status = app
        .create_selection_round(pb::CreateSelectionRoundRequest {
            request_id: "round-y".into(),
            pool_id: ROUND_POOL.into(),
            title: "past".into(),
            submission_deadline_time: Some(in_seconds(-10)),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["submission_deadline_time"]);
    let rounds = app
        .list_selection_rounds(pb::ListSelectionRoundsRequest {
            state: pb::SelectionRoundState::Closed as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .rounds;
    assert_eq!(rounds.len(), 1);
}
