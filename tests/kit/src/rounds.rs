//! Requests of data-infrastructure selection rounds that tests make again and again.

use subsidy_common::Uscc;
use subsidy_proto::application as pb;

use crate::money::cny;
use crate::requests::{App, in_seconds};
use crate::stack::Stack;

/// The pool of the rounds a test opens with [`open_round`].
pub const ROUND_POOL: &str = "data-infra-test";
/// A submission deadline far enough ahead for a test, in seconds.
pub const DEADLINE_SECONDS: i64 = 3600;

/// Creates [`ROUND_POOL`] with `total_fen` (no cap per beneficiary) and opens a round on it.
pub async fn open_round(stack: &Stack, total_fen: i64) -> (App, pb::SelectionRound) {
    stack
        .create_pool(ROUND_POOL, total_fen, None, crate::LONG_HOLD_SECONDS)
        .await;
    let mut app = stack.app().await;
    let round = app
        .create_selection_round(pb::CreateSelectionRoundRequest {
            request_id: "round-1".into(),
            pool_id: ROUND_POOL.into(),
            title: "2025 benchmark projects, first round".into(),
            submission_deadline_time: Some(in_seconds(DEADLINE_SECONDS)),
        })
        .await
        .expect("open a round")
        .into_inner()
        .round
        .expect("the response carries the round");
    assert_eq!(round.state(), pb::SelectionRoundState::Open);
    (app, round)
}

/// Submits a trusted-data-space proposal titled `title` and returns it.
pub async fn propose(
    app: &mut App,
    round_id: &str,
    applicant: &Uscc,
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
    .expect("the response carries the proposal")
}

/// Scores a proposal as `expert` of `organization`, with a token of that expert.
pub async fn score(
    app: &mut App,
    proposal_id: &str,
    expert: &str,
    organization: &Uscc,
    value: u32,
) -> Result<pb::Proposal, tonic::Status> {
    let mut request = tonic::Request::new(pb::ScoreProposalRequest {
        request_id: format!("score-{proposal_id}-{expert}-{value}"),
        proposal_id: proposal_id.into(),
        expert_id: expert.into(),
        expert_organization_uscc: organization.to_string(),
        score: value,
        comment: String::new(),
    });
    let token = crate::auth::token(
        &format!("expert-{expert}"),
        &[subsidy_proto::access::Role::Expert],
        &[],
        Some(expert),
    );
    request
        .metadata_mut()
        .insert("authorization", crate::auth::bearer(&token));
    app.score_proposal(request).await.map(|r| {
        r.into_inner()
            .proposal
            .expect("the response carries the proposal")
    })
}

/// Closes a round to submissions.
pub async fn close(app: &mut App, round_id: &str) {
    app.close_selection_round(pb::CloseSelectionRoundRequest {
        request_id: format!("close-{round_id}"),
        round_id: round_id.into(),
    })
    .await
    .expect("close the round");
}

/// A `FinalizeSelectionRound` request.
pub fn finalize(request_id: &str, round_id: &str) -> pb::FinalizeSelectionRoundRequest {
    pb::FinalizeSelectionRoundRequest {
        request_id: request_id.into(),
        round_id: round_id.into(),
    }
}

/// Reads a proposal.
pub async fn get_proposal(app: &mut App, proposal_id: &str) -> pb::Proposal {
    app.get_proposal(pb::GetProposalRequest {
        proposal_id: proposal_id.into(),
    })
    .await
    .expect("read the proposal")
    .into_inner()
    .proposal
    .expect("the response carries the proposal")
}
