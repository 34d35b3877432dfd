//! Data-infrastructure selection rounds through the application service with fake peers: the
//! conflict-of-interest check, score validation and closed rounds. The rounds that move money
//! through the real budget live in the cross-service tests of `tests/`.

mod support;

use subsidy_proto::application as pb;
use subsidy_proto::status::{reason, violated_fields};
use subsidy_testkit::rounds::*;
use support::*;
use tonic::Code;

#[tokio::test]
async fn an_expert_cannot_score_a_proposal_of_their_own_organisation() {
    // Proves the conflict-of-interest check and score validation.
    let (stack, _peers) = spawn(quick_application(&[])).await;
    let (mut app, round) = open_round(&stack, 4_000_000_000).await;
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
    let unchanged = get_proposal(&mut app, &proposal.proposal_id).await;
    assert_eq!(unchanged, proposal);
}

#[tokio::test]
async fn a_closed_round_accepts_no_proposals_and_an_unknown_pool_opens_no_round() {
    // Proves ROUND_CLOSED after closing, and POOL_NOT_FOUND for a pool the budget lacks.
    let (stack, _peers) = spawn(quick_application(&[])).await;
    let (mut app, round) = open_round(&stack, 4_000_000_000).await;
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
