//! Every decision recorded, explained and reproducible, across the four real services: each
//! claim and proposal names the rules service's decisions that shaped it (evaluation,
//! re-evaluation after the enterprise's usage changed, re-evaluation on approval, ranking), the
//! rules service returns each one whole, and every decision it stored in the run (read from its
//! own table) is linked and replays identically.

mod application_support;

use std::collections::BTreeMap;

use application_support::*;
use sqlx::Row;
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
    // and proposals (screened, ranked) name each decision that shaped them; every decision the
    // rules service stored in the run is one of them, held under that id about that
    // enterprise, and replays identically; and an applicant of another enterprise cannot read
    // it.
    let stack = subsidy_tests::spawn_with(quick_application(&[])).await;
    let linked = run_claims_and_a_round(&stack).await;
    assert_eq!(linked.len(), 1 + 1 + 1 + 3 + 1, "{linked:?}");
    assert_every_stored_decision_linked_and_replayed(&stack, &linked).await;

    let mut rules = RulesServiceClient::new(stack.channel(ServiceKind::Rules).await);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_is_recorded_with_its_decision_and_a_refused_submission_stores_none() {
    // Proves: a submission is evaluated before its claim is recorded, and recorded with the
    // decision in the same transaction (the history's submission and decision entries carry
    // one time); a submission the application refuses (its contract claimed already, its
    // enterprise not registered, an invoice of another buyer, an invoice another claim holds)
    // is not evaluated, so the rules service stores no decision that nothing links.
    let stack = subsidy_tests::spawn_with(quick_application(&[])).await;
    let mut app = stack.app().await;
    let (buyer, stranger) = (shandong(1), shandong(2));
    register(&mut app, &buyer).await;
    let claim = submitted(
        &mut app,
        "c-1",
        &buyer,
        contract("SD-1", &seller(1), 100_000_000),
    )
    .await;
    assert_eq!(claim.state(), pb::ClaimState::PendingReview, "{claim:?}");
    let entries = history(&mut app, &claim.claim_id).await;
    assert!(
        entries[1]
            .reason
            .contains(&claim.decision.as_ref().unwrap().decision_id),
        "{entries:?}"
    );
    assert_eq!(
        entries[0].create_time, entries[1].create_time,
        "submitted and decided in one transaction: {entries:?}"
    );

    let duplicate = app
        .submit_claim(submit(
            "c-2",
            &buyer,
            contract("SD-1", &seller(1), 100_000_000),
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&duplicate).as_deref(), Some("DUPLICATE_CONTRACT"));
    let unregistered = app
        .submit_claim(submit(
            "c-3",
            &stranger,
            contract("SD-2", &seller(1), 100_000_000),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        reason(&unregistered).as_deref(),
        Some("ENTERPRISE_NOT_FOUND")
    );

    // Refused for its invoices: one from another buyer, then one another claim holds.
    let july = subsidy_proto::google::r#type::Date {
        year: 2025,
        month: 7,
        day: 1,
    };
    let mut mismatched = submit("c-4", &buyer, contract("SD-3", &seller(1), 100_000_000));
    mismatched.invoices = vec![invoice(
        "not-ours",
        seller(1).as_str(),
        stranger.as_str(),
        1_000_000,
        july,
    )];
    let status = app.submit_claim(mismatched).await.unwrap_err();
    assert_eq!(reason(&status).as_deref(), Some("INVOICE_PARTY_MISMATCH"));
    let shared = invoice(
        "shared",
        seller(1).as_str(),
        buyer.as_str(),
        1_000_000,
        july,
    );
    let mut holder = submit("c-5", &buyer, contract("SD-4", &seller(1), 100_000_000));
    holder.invoices = vec![shared.clone()];
    let holder = app
        .submit_claim(holder)
        .await
        .unwrap()
        .into_inner()
        .claim
        .unwrap();
    let mut second = submit("c-6", &buyer, contract("SD-5", &seller(1), 100_000_000));
    second.invoices = vec![shared];
    let status = app.submit_claim(second).await.unwrap_err();
    assert_eq!(reason(&status).as_deref(), Some("INVOICE_ALREADY_CLAIMED"));

    let linked = vec![
        (
            buyer.to_string(),
            claim.decision.unwrap().decision_id.clone(),
        ),
        (
            buyer.to_string(),
            holder.decision.unwrap().decision_id.clone(),
        ),
    ];
    assert_every_stored_decision_linked_and_replayed(&stack, &linked).await;
    stack.shutdown().await;
}

/// The contract total whose 5 % is `entitlement_fen`.
fn for_entitlement(entitlement_fen: i64) -> i64 {
    entitlement_fen * 20
}

/// The stored compute-voucher decision `decision_id`: its inputs and its result.
async fn stored_voucher(
    rules: &mut RulesServiceClient<Channel>,
    decision_id: &str,
) -> (rpb::ComputeVoucherInputs, rpb::Decision) {
    let stored = rules
        .get_decision(rpb::GetDecisionRequest {
            decision_id: decision_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    match (stored.inputs, stored.result) {
        (
            Some(rpb::stored_decision::Inputs::ComputeVoucher(inputs)),
            Some(rpb::stored_decision::Result::Decision(decision)),
        ) => (inputs, decision),
        other => panic!("{decision_id} is not a compute-voucher decision: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_decided_again_after_its_enterprises_usage_changed_and_a_refused_recheck_are_linked()
 {
    // Proves: two waitlisted claims of one enterprise were each decided on a usage of zero;
    // once money comes back the first is held, the budget refuses the second's stale
    // entitlement over the enterprise cap, and the second is decided again on the new usage:
    // its links are EVALUATION then REEVALUATION, the re-evaluation stored with the usage and
    // the smaller entitlement it was funded with. An approval whose recheck refuses (the buyer
    // denylisted since submission) is refused NOT_ELIGIBLE_ON_RECHECK and still links the
    // refusing decision as APPROVAL_RECHECK. Every decision the rules service stored in the run
    // is linked and replays identically, the ones made before the denylist changed too.
    const CAP_FEN: i64 = ENTERPRISE_CAP_FEN;
    let pool_fen = CAP_FEN + 300_000_000;
    let stack = with_pool(pool_fen, LONG_HOLD_SECONDS, &[]).await;
    let mut app = stack.app().await;
    let (other, buyer) = (shandong(21), shandong(22));
    for who in [&other, &buyer] {
        register(&mut app, who).await;
    }

    // Another enterprise takes its whole cap: 3,000,000.00 of the pool is left.
    let first_come = submitted(
        &mut app,
        "c-other",
        &other,
        contract("RE-0", &seller(1), for_entitlement(CAP_FEN)),
    )
    .await;
    assert_eq!(first_come.state(), pb::ClaimState::PendingReview);
    // The buyer's two claims: 4,000,000.00 does not fit, and 3,000,000.00 waits behind it.
    // Both are decided on a usage of zero (neither holds anything).
    let (first_fen, second_fen) = (400_000_000, 300_000_000);
    let first = submitted(
        &mut app,
        "c-first",
        &buyer,
        contract("RE-1", &seller(2), for_entitlement(first_fen)),
    )
    .await;
    let second = submitted(
        &mut app,
        "c-second",
        &buyer,
        contract("RE-2", &seller(3), for_entitlement(second_fen)),
    )
    .await;
    for claim in [&first, &second] {
        wait_claim_state(&app, &claim.claim_id, pb::ClaimState::Waitlisted).await;
    }

    // The other claim is rejected: its hold comes back, the first claim is held in full, and
    // the second's 3,000,000.00 would take the buyer past its cap.
    app.reject_claim(reject("rej-other", &first_come.claim_id))
        .await
        .unwrap();
    let first = wait_claim_state(&app, &first.claim_id, pb::ClaimState::PendingReview).await;
    let second = wait_claim_state(&app, &second.claim_id, pb::ClaimState::PendingReview).await;
    assert_eq!(fen_of(&first.reserved_amount), first_fen);
    let left_of_cap = CAP_FEN - first_fen;
    assert_eq!(fen_of(&second.reserved_amount), left_of_cap, "{second:?}");
    assert_eq!(
        purposes(&second.decisions),
        [
            pb::DecisionPurpose::Evaluation,
            pb::DecisionPurpose::Reevaluation
        ],
        "{second:?}"
    );
    assert_eq!(
        second.decision.as_ref().unwrap().decision_id,
        second.decisions[1].decision_id,
        "the claim reports the decision it was funded on"
    );
    let mut rules = RulesServiceClient::new(stack.channel(ServiceKind::Rules).await);
    let (inputs, decision) = stored_voucher(&mut rules, &second.decisions[0].decision_id).await;
    let facts = inputs.claim.unwrap();
    assert_eq!(fen_of(&facts.enterprise_usage), 0);
    assert_eq!(fen_of(&decision.entitlement), second_fen);
    let (inputs, decision) = stored_voucher(&mut rules, &second.decisions[1].decision_id).await;
    let facts = inputs.claim.unwrap();
    assert_eq!(
        fen_of(&facts.enterprise_usage),
        first_fen,
        "the first claim's hold"
    );
    assert_eq!(fen_of(&decision.entitlement), left_of_cap);
    assert!(
        decision.eligible && decision.enterprise_cap_reached,
        "{decision:?}"
    );

    // The buyer is denylisted after submission: the approval's recheck finds it ineligible.
    let replaced = rules
        .replace_denylist(rpb::ReplaceDenylistRequest {
            request_id: "deny-buyer".into(),
            entries: vec![rpb::DenylistEntry {
                uscc: buyer.to_string(),
                reason: "listed for a false declaration".into(),
                source: "Credit China".into(),
                listed_date: None,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replaced.entry_count, 1);
    let refused = approve_claim(
        &app,
        approve("a-first", &first.claim_id, for_entitlement(first_fen)),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert_eq!(reason(&refused).as_deref(), Some("NOT_ELIGIBLE_ON_RECHECK"));
    let first = get_claim(&mut app, &first.claim_id).await;
    assert_eq!(
        first.state(),
        pb::ClaimState::PendingReview,
        "the hold stays"
    );
    assert_eq!(
        purposes(&first.decisions),
        [
            pb::DecisionPurpose::Evaluation,
            pb::DecisionPurpose::ApprovalRecheck
        ],
        "{first:?}"
    );
    let (inputs, decision) = stored_voucher(&mut rules, &first.decisions[1].decision_id).await;
    assert!(inputs.buyer_on_denylist);
    assert!(!decision.eligible);
    let failed: Vec<&str> = decision
        .failed_checks
        .iter()
        .map(|check| check.reason.as_str())
        .collect();
    assert_eq!(failed, ["BUYER_ON_DENYLIST"]);

    let rejected = get_claim(&mut app, &first_come.claim_id).await;
    assert_eq!(
        purposes(&rejected.decisions),
        [pb::DecisionPurpose::Evaluation]
    );
    let linked: Vec<(String, String)> = [&rejected, &first, &second]
        .into_iter()
        .flat_map(|claim| {
            claim
                .decisions
                .iter()
                .map(|link| (claim.enterprise_uscc.clone(), link.decision_id.clone()))
        })
        .collect();
    assert_eq!(linked.len(), 5, "{linked:?}");
    assert_every_stored_decision_linked_and_replayed(&stack, &linked).await;
    assert_claims_consistent(&stack, TEST_POOL).await;
    assert_ledger_intact(&stack).await;
    stack.shutdown().await;
}

/// What a stored decision of the rules service is about: its row's kind and subject.
struct StoredRow {
    decision_id: String,
    kind: String,
    subject_uscc: String,
}

/// Every row of the rules service's `decisions` table, in evaluation order.
async fn stored_rows(stack: &Stack) -> Vec<StoredRow> {
    let db = stack.database(ServiceKind::Rules).await;
    let rows = query_rows(
        &db,
        "SELECT decision_id, kind, subject_uscc FROM decisions ORDER BY evaluated_us, decision_id",
        &[],
    )
    .await;
    rows.iter()
        .map(|row| StoredRow {
            decision_id: row.try_get("decision_id").expect("decision_id"),
            kind: row.try_get("kind").expect("kind"),
            subject_uscc: row.try_get("subject_uscc").expect("subject_uscc"),
        })
        .collect()
}

/// Checks every decision the rules service stored in the run, read from its own table rather
/// than from the links: each is one the application linked (`linked`: subject, decision id;
/// none stored and left unlinked, none linked and not stored), the rules service returns it
/// about that subject, and it replays identically.
async fn assert_every_stored_decision_linked_and_replayed(
    stack: &Stack,
    linked: &[(String, String)],
) {
    let by_id: BTreeMap<&str, &str> = linked
        .iter()
        .map(|(subject, id)| (id.as_str(), subject.as_str()))
        .collect();
    assert_eq!(
        by_id.len(),
        linked.len(),
        "a decision linked twice: {linked:?}"
    );
    let rows = stored_rows(stack).await;
    let unlinked: Vec<(&str, &str, &str)> = rows
        .iter()
        .filter(|row| !by_id.contains_key(row.decision_id.as_str()))
        .map(|row| {
            (
                row.decision_id.as_str(),
                row.kind.as_str(),
                row.subject_uscc.as_str(),
            )
        })
        .collect();
    assert!(
        unlinked.is_empty(),
        "stored decisions no claim, proposal or round names: {unlinked:?}"
    );
    assert_eq!(
        rows.len(),
        linked.len(),
        "every linked decision is stored: {linked:?}"
    );
    let mut rules = RulesServiceClient::new(stack.channel(ServiceKind::Rules).await);
    for row in &rows {
        let stored = rules
            .get_decision(rpb::GetDecisionRequest {
                decision_id: row.decision_id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .decision
            .unwrap();
        assert_eq!(stored.decision_id, row.decision_id);
        assert_eq!(stored.subject_uscc, by_id[row.decision_id.as_str()]);
        assert_eq!(stored.subject_uscc, row.subject_uscc);
        let replayed = rules
            .replay_decision(rpb::ReplayDecisionRequest {
                decision_id: row.decision_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            replayed.identical,
            "{} ({}): {:?}",
            row.decision_id, row.kind, replayed.differences
        );
    }
}
