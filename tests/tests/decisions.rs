//! Every decision recorded, explained and reproducible, across the four real services: each
//! claim and proposal names the rules service's decisions that shaped it (evaluation,
//! re-evaluation on approval, ranking), the rules service returns each one whole, and every
//! decision of the run replays identically.

mod application_support;

use application_support::*;
use subsidy_common::config::ServiceKind;
use subsidy_proto::access::Role;
use subsidy_proto::application as pb;
use subsidy_proto::rules as rpb;
use subsidy_proto::rules::rules_service_client::RulesServiceClient;
use subsidy_proto::status::reason;
use subsidy_testkit::requests::*;
use subsidy_testkit::rounds::*;
use subsidy_testkit::*;
use tonic::Code;

/// The purposes of an application's decision links, in order.
fn purposes(links: &[pb::DecisionLink]) -> Vec<pb::DecisionPurpose> {
    links.iter().map(pb::DecisionLink::purpose).collect()
}

/// Runs claims and a round through the stack; every (application's enterprise or empty for
/// the round, decision id) the application linked.
async fn run_claims_and_a_round(stack: &Stack) -> Vec<(String, String)> {
    let mut app = stack.app().await;
    let (a, b, outsider) = (shandong(1), shandong(2), beijing(3));
    for who in [&a, &b, &outsider] {
        register(&mut app, who).await;
    }
    let mut linked = Vec::new();

    // An eligible claim, approved on a smaller verified amount with a rating.
    let claim = submitted(
        &mut app,
        "c-1",
        &a,
        contract("SD-1", &seller(1), 100_000_000),
    )
    .await;
    assert_eq!(claim.state(), pb::ClaimState::PendingReview, "{claim:?}");
    approve_claim(
        &app,
        approve_rated("a-1", &claim.claim_id, 80_000_000, pb::BenefitRating::High),
    )
    .await
    .unwrap();
    let approved = get_claim(&mut app, &claim.claim_id).await;
    assert_eq!(
        purposes(&approved.decisions),
        [
            pb::DecisionPurpose::Evaluation,
            pb::DecisionPurpose::ApprovalRecheck
        ]
    );
    assert_eq!(
        approved.decisions[0].decision_id,
        approved.decision.as_ref().unwrap().decision_id,
        "the first link is the decision the claim reports"
    );

    // A claim refused by the rules: its one evaluation is linked.
    let mut outside = contract("SD-2", &seller(2), 50_000_000);
    outside.data_center_division_code = "110105".into();
    let refused = submitted(&mut app, "c-2", &b, outside).await;
    assert_eq!(refused.state(), pb::ClaimState::Ineligible, "{refused:?}");
    assert_eq!(
        purposes(&refused.decisions),
        [pb::DecisionPurpose::Evaluation]
    );
    for claim in [&approved, &refused] {
        for link in &claim.decisions {
            linked.push((claim.enterprise_uscc.clone(), link.decision_id.clone()));
        }
    }

    // A round: two eligible proposals scored and ranked, one screened out.
    let (mut app, round) = open_round(stack, 4_000_000_000).await;
    let first = propose(&mut app, &round.round_id, &a, "space", 800_000_000).await;
    let second = propose(&mut app, &round.round_id, &b, "field", 500_000_000).await;
    let far = propose(&mut app, &round.round_id, &outsider, "far", 100_000_000).await;
    assert_eq!(far.state(), pb::ProposalState::Ineligible);
    let expert_org = shandong(50);
    score(&mut app, &first.proposal_id, "e1", &expert_org, 90)
        .await
        .unwrap();
    score(&mut app, &second.proposal_id, "e1", &expert_org, 80)
        .await
        .unwrap();
    close(&mut app, &round.round_id).await;
    let finalized = app
        .finalize_selection_round(finalize("f-1", &round.round_id))
        .await
        .unwrap()
        .into_inner();
    let ranking_id = finalized.round.unwrap().ranking_decision_id;
    assert!(uuid::Uuid::parse_str(&ranking_id).is_ok(), "{ranking_id}");
    for (proposal, expected) in [
        (
            &first,
            vec![
                pb::DecisionPurpose::Evaluation,
                pb::DecisionPurpose::Ranking,
            ],
        ),
        (
            &second,
            vec![
                pb::DecisionPurpose::Evaluation,
                pb::DecisionPurpose::Ranking,
            ],
        ),
        (&far, vec![pb::DecisionPurpose::Evaluation]),
    ] {
        let read = get_proposal(&mut app, &proposal.proposal_id).await;
        assert_eq!(purposes(&read.decisions), expected, "{read:?}");
        for link in &read.decisions {
            if link.purpose() == pb::DecisionPurpose::Ranking {
                assert_eq!(link.decision_id, ranking_id);
                continue;
            }
            linked.push((read.applicant_uscc.clone(), link.decision_id.clone()));
        }
    }
    linked.push((String::new(), ranking_id));
    linked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_decision_of_a_run_is_linked_stored_and_replays_identically() {
    // Proves: through the real services, claims (evaluated, re-evaluated on approval, refused)
    // and proposals (screened, ranked) name each decision that shaped them; the rules service
    // holds each under that id about that enterprise; every one replays identically; and an
    // applicant of another enterprise cannot read it.
    let stack = subsidy_tests::spawn_with(quick_application(&[])).await;
    let linked = run_claims_and_a_round(&stack).await;
    assert_eq!(linked.len(), 1 + 1 + 1 + 3 + 1, "{linked:?}");
    let mut rules = RulesServiceClient::new(stack.channel(ServiceKind::Rules).await);
    for (subject, decision_id) in &linked {
        let stored = rules
            .get_decision(rpb::GetDecisionRequest {
                decision_id: decision_id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .decision
            .unwrap();
        assert_eq!(stored.decision_id, *decision_id);
        assert_eq!(stored.subject_uscc, *subject);
        let replayed = rules
            .replay_decision(rpb::ReplayDecisionRequest {
                decision_id: decision_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            replayed.identical,
            "{decision_id}: {:?}",
            replayed.differences
        );
    }

    // The first claim's decisions are shandong(1)'s: an applicant of shandong(2) is told none
    // exists.
    let other = subsidy_testkit::auth::token(
        "applicant-b",
        &[Role::Applicant],
        &[shandong(2).to_string()],
        None,
    );
    let mut request = tonic::Request::new(rpb::GetDecisionRequest {
        decision_id: linked[0].1.clone(),
    });
    request
        .metadata_mut()
        .insert("authorization", subsidy_testkit::auth::bearer(&other));
    let status = rules.get_decision(request).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(reason(&status).as_deref(), Some("DECISION_NOT_FOUND"));
    assert_ledger_intact(&stack).await;
    stack.shutdown().await;
}
