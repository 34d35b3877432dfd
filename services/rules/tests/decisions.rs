//! The stored decisions of the rules service over gRPC: every evaluation is stored before it is
//! answered and read back whole (GetDecision), an applicant reads only its own enterprises'
//! decisions, every stored decision replays identically (ReplayDecision), a replay names what
//! differs, and the database refuses to change a stored decision. A fresh database per test.

mod support;

use subsidy_common::db::Db;
use subsidy_proto::access::Role;
use subsidy_proto::rules as pb;
use subsidy_proto::rules::rules_service_client::RulesServiceClient;
use subsidy_proto::status::reason;
use subsidy_testkit::Channel;
use support::*;
use tonic::Code;

/// A request carrying `token` instead of the kit's operator token.
fn as_bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", subsidy_testkit::auth::bearer(token));
    request
}

/// A token of an applicant bound to `enterprises` only.
fn applicant(enterprises: &[String]) -> String {
    subsidy_testkit::auth::token("applicant-1", &[Role::Applicant], enterprises, None)
}

/// A token of an auditor.
fn auditor() -> String {
    subsidy_testkit::auth::token("auditor-1", &[Role::Auditor], &[], None)
}

fn get(id: &str) -> pb::GetDecisionRequest {
    pb::GetDecisionRequest {
        decision_id: id.into(),
    }
}

fn replay(id: &str) -> pb::ReplayDecisionRequest {
    pb::ReplayDecisionRequest {
        decision_id: id.into(),
    }
}

/// A ranking request of three candidates from 20,000,000.00.
fn round_request() -> pb::RankSelectionRoundRequest {
    let candidate =
        |id: &str, requested_fen: i64, scores: Vec<u32>, second: i64| pb::SelectionCandidate {
            proposal_id: id.into(),
            requested_amount: cny(requested_fen),
            expert_scores: scores,
            mean_score: String::new(),
            submit_time: Some(prost_types::Timestamp {
                seconds: 1_750_000_000 + second,
                nanos: 0,
            }),
        };
    pb::RankSelectionRoundRequest {
        pool_available: cny(2_000_000_000),
        candidates: vec![
            candidate("a", 900_000_000, vec![90, 80], 1),
            candidate("b", 800_000_000, vec![85], 2),
            candidate("c", 700_000_000, vec![70, 71, 72], 3),
        ],
        policy_version: String::new(),
    }
}

/// One evaluation of each kind: a compute voucher of `shandong(1)` (eligible), one refused
/// (general-purpose hosting), a proposal of `shandong(3)`, and a ranking; their decision ids.
async fn evaluate_each_kind(client: &mut RulesServiceClient<Channel>) -> Vec<String> {
    let eligible = client
        .evaluate_compute_voucher(evaluate_request(wire_claim()))
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    let mut hosting = wire_claim();
    hosting.contract_number = "SD-AI-2025-0002".into();
    hosting.compute_type = pb::ComputeType::GeneralPurposeHosting as i32;
    let refused = client
        .evaluate_compute_voucher(evaluate_request(hosting))
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    let proposal = client
        .evaluate_data_infra_proposal(pb::EvaluateDataInfraProposalRequest {
            proposal: Some(wire_proposal()),
            policy_version: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    let ranking = client
        .rank_selection_round(round_request())
        .await
        .unwrap()
        .into_inner();
    vec![
        eligible.decision_id,
        refused.decision_id,
        proposal.decision_id,
        ranking.decision_id,
    ]
}

#[tokio::test]
async fn every_evaluation_is_stored_whole_and_an_auditor_reads_it_back() {
    // Proves: a compute-voucher evaluation, a proposal's and a ranking are each stored under
    // the id they were answered with, with the inputs as sent, the exact policy version, its
    // content hash and parameters, the subject enterprise, and the result exactly as answered
    // (trace, checks in both languages, amounts).
    let url = fresh_db("rules_decisions_stored").await;
    let mut client = spawn(store(&url, true).await).await;
    let mut claim = wire_claim();
    claim.contract_total = cny(1_234_567);
    let answered = client
        .evaluate_compute_voucher(evaluate_request(claim.clone()))
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    let stored = client
        .get_decision(as_bearer(get(&answered.decision_id), &auditor()))
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    assert_eq!(stored.decision_id, answered.decision_id);
    assert_eq!(stored.kind(), pb::DecisionKind::ComputeVoucher);
    assert_eq!(
        (stored.policy_id.as_str(), stored.policy_version.as_str()),
        ("compute-voucher", "2025.1")
    );
    let policy = client
        .get_policy(pb::GetPolicyRequest {
            policy_id: "compute-voucher".into(),
            version: "2025.1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .policy
        .unwrap();
    assert_eq!(stored.policy_content_sha256, policy.content_sha256);
    assert_eq!(stored.policy_parameters, policy.parameters);
    assert_eq!(stored.subject_uscc, shandong(1).to_string());
    assert_eq!(stored.evaluate_time, answered.evaluate_time);
    assert_eq!(
        stored.inputs,
        Some(pb::stored_decision::Inputs::ComputeVoucher(
            pb::ComputeVoucherInputs {
                claim: Some(claim),
                buyer_on_denylist: false,
                // The shipped 2025.1 version does not consult the provider registry.
                provider_registry: None,
            }
        ))
    );
    assert_eq!(
        stored.result,
        Some(pb::stored_decision::Result::Decision(answered.clone()))
    );
    assert!(answered.trace.len() > 3, "{answered:?}");

    let ids = evaluate_each_kind(&mut client).await;
    let kinds: Vec<_> = {
        let mut kinds = Vec::new();
        for id in &ids {
            let stored = client
                .get_decision(as_bearer(get(id), &auditor()))
                .await
                .unwrap()
                .into_inner()
                .decision
                .unwrap();
            kinds.push((stored.kind(), stored.subject_uscc));
        }
        kinds
    };
    assert_eq!(
        kinds,
        [
            (pb::DecisionKind::ComputeVoucher, shandong(1).to_string()),
            (pb::DecisionKind::ComputeVoucher, shandong(1).to_string()),
            (pb::DecisionKind::DataInfra, shandong(3).to_string()),
            (pb::DecisionKind::SelectionRound, String::new()),
        ]
    );
    let db = connect(&url).await;
    assert_eq!(subsidy_testkit::count(&db, "decisions").await, 5);
}

#[tokio::test]
async fn an_applicant_reads_its_own_enterprises_decisions_and_nothing_else() {
    // Proves: an applicant bound to the buyer reads the buyer's decision; another
    // enterprise's decision and a ranking answer NOT_FOUND/DECISION_NOT_FOUND exactly as an
    // unknown id does; a malformed id is INVALID_ARGUMENT; an applicant may not replay.
    let url = fresh_db("rules_decisions_tenants").await;
    let mut client = spawn(store(&url, true).await).await;
    let ids = evaluate_each_kind(&mut client).await;
    let own = applicant(&[shandong(1).to_string()]);
    let read = client
        .get_decision(as_bearer(get(&ids[0]), &own))
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    assert_eq!(read.decision_id, ids[0]);
    let unknown = uuid::Uuid::now_v7().to_string();
    for hidden in [&ids[2], &ids[3], &unknown] {
        let status = client
            .get_decision(as_bearer(get(hidden), &own))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{hidden}: {status:?}");
        assert_eq!(reason(&status).as_deref(), Some("DECISION_NOT_FOUND"));
    }
    let status = client
        .get_decision(as_bearer(get("not-a-uuid"), &auditor()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = client
        .replay_decision(as_bearer(replay(&ids[0]), &own))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn every_stored_decision_replays_identically_even_after_the_denylist_changed() {
    // Proves: replaying each kind of decision under its stored policy version gives the
    // identical result, also a compute voucher decided before its buyer was denylisted (the
    // denylist's answer is a stored input) and after a newer policy version was published
    // (the stored version is used, not the one in effect).
    let url = fresh_db("rules_decisions_replay").await;
    let mut client = spawn(store(&url, true).await).await;
    let ids = evaluate_each_kind(&mut client).await;
    client
        .replace_denylist(pb::ReplaceDenylistRequest {
            request_id: "deny-buyer".into(),
            entries: vec![entry(1, "fraud")],
        })
        .await
        .unwrap();
    let newer = draft("compute-voucher", "2025.2", |document| {
        document.replace(
            r#""rating": "'LOW'", "rate-out": "0.05""#,
            r#""rating": "'LOW'", "rate-out": "0.03""#,
        )
    });
    client
        .publish_policy(publish_request("publish-2025.2", newer))
        .await
        .unwrap();
    let denied = client
        .evaluate_compute_voucher(evaluate_request(wire_claim()))
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    assert_eq!(reasons(&denied), ["BUYER_ON_DENYLIST"]);
    for id in ids.iter().chain([&denied.decision_id]) {
        let replayed = client
            .replay_decision(as_bearer(replay(id), &auditor()))
            .await
            .unwrap()
            .into_inner();
        assert!(replayed.identical, "{id}: {:?}", replayed.differences);
        assert!(replayed.differences.is_empty());
        assert_eq!(replayed.decision_id, *id);
        assert!(replayed.replayed.is_some());
    }
}

/// Stores a copy of decision `id` under a new id with its entitlement and one trace step
/// changed, as a damaged or rewritten database would hold it; the new id.
async fn store_altered_copy(db: &Db, client: &mut RulesServiceClient<Channel>, id: &str) -> String {
    let mut stored = client
        .get_decision(as_bearer(get(id), &auditor()))
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    let copy_id = uuid::Uuid::now_v7().to_string();
    stored.decision_id = copy_id.clone();
    let Some(pb::stored_decision::Result::Decision(decision)) = stored.result.as_mut() else {
        panic!("a compute-voucher decision");
    };
    decision.entitlement = cny(4_000_000);
    decision.trace[0].passed = !decision.trace[0].passed;
    sqlx::query(
        "INSERT INTO decisions (decision_id, kind, policy_id, policy_version, subject_uscc, \
         evaluated_us, record) VALUES ($1, 'COMPUTE_VOUCHER', 'compute-voucher', '2025.1', $2, 0, $3)",
    )
    .bind(&copy_id)
    .bind(&stored.subject_uscc)
    .bind(prost::Message::encode_to_vec(&stored))
    .execute(&db.pool)
    .await
    .expect("insert the altered copy");
    copy_id
}

#[tokio::test]
async fn a_replay_names_each_field_that_differs_and_stored_decisions_cannot_be_changed() {
    // Proves: a stored result that the inputs do not give again is reported not identical with
    // the differing fields named (stored and replayed values), and the database refuses to
    // update or delete a stored decision.
    let url = fresh_db("rules_decisions_differ").await;
    let mut client = spawn(store(&url, true).await).await;
    let ids = evaluate_each_kind(&mut client).await;
    let db = connect(&url).await;
    let copy = store_altered_copy(&db, &mut client, &ids[0]).await;
    let replayed = client
        .replay_decision(as_bearer(replay(&copy), &auditor()))
        .await
        .unwrap()
        .into_inner();
    assert!(!replayed.identical);
    let fields: Vec<(&str, &str, &str)> = replayed
        .differences
        .iter()
        .map(|d| (d.field.as_str(), d.stored.as_str(), d.replayed.as_str()))
        .collect();
    assert_eq!(fields.len(), 2, "{fields:?}");
    assert_eq!(fields[0], ("entitlement", "40000.00", "50000.00"));
    assert_eq!(fields[1].0, "trace[0].passed");

    for statement in [
        "UPDATE decisions SET subject_uscc = 'X' WHERE decision_id = $1",
        "DELETE FROM decisions WHERE decision_id = $1",
    ] {
        let refused = sqlx::query(statement).bind(&ids[0]).execute(&db.pool).await;
        assert!(refused.is_err(), "{statement} was allowed");
    }
}

#[tokio::test]
async fn concurrent_evaluations_are_each_stored_under_the_id_they_were_answered_with() {
    // Proves: evaluations that arrive together, and are stored together by the decisions'
    // writer (group commit), are each stored once, whole, under their own id, with their own
    // inputs: no evaluation is answered without its row, none is stored twice or mixed up.
    let url = fresh_db("rules_decisions_concurrent").await;
    let store = store(&url, true).await;
    let db = store.db().clone();
    let client = spawn(store).await;
    const EVALUATIONS: i64 = 48;
    let calls: Vec<_> = (0..EVALUATIONS)
        .map(|n| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let mut claim = wire_claim();
                claim.contract_number = format!("SD-AI-2025-{n:04}");
                claim.contract_total = cny(100_000_000 + n);
                let decision = client
                    .evaluate_compute_voucher(evaluate_request(claim.clone()))
                    .await
                    .unwrap()
                    .into_inner()
                    .decision
                    .unwrap();
                (claim, decision)
            })
        })
        .collect();
    let mut client = client;
    for call in calls {
        let (claim, answered) = call.await.unwrap();
        let stored = client
            .get_decision(as_bearer(get(&answered.decision_id), &auditor()))
            .await
            .unwrap()
            .into_inner()
            .decision
            .unwrap();
        let Some(pb::stored_decision::Inputs::ComputeVoucher(inputs)) = stored.inputs else {
            panic!("a compute-voucher decision stores its claim");
        };
        assert_eq!(inputs.claim, Some(claim));
        assert_eq!(
            stored.result,
            Some(pb::stored_decision::Result::Decision(answered))
        );
    }
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM decisions")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(rows, EVALUATIONS);
}

#[tokio::test]
async fn a_batch_of_decisions_the_database_refuses_is_written_row_by_row() {
    // Proves: when the one INSERT of a batch fails (here a row repeating another's id), the
    // writer writes each row on its own, so only the refused row's evaluation goes unanswered
    // and the others are stored.
    use subsidy_rules::storage::decisions::{self, DecisionKind, DecisionRow};
    let url = fresh_db("rules_decisions_refused_row").await;
    let store = store(&url, true).await;
    let row = |id: &str| DecisionRow {
        decision_id: id.into(),
        kind: DecisionKind::ComputeVoucher,
        policy_id: "compute-voucher",
        policy_version: "2025.1".into(),
        subject_uscc: shandong(1).to_string(),
        evaluated_us: 1_750_000_000_000_000,
        record: vec![1, 2, 3],
    };
    let rows = [
        row("00000000-0000-7000-8000-000000000001"),
        row("00000000-0000-7000-8000-000000000002"),
        row("00000000-0000-7000-8000-000000000001"),
    ];
    let results = decisions::write_batch(store.pool(), &rows).await;
    let written: Vec<bool> = results.iter().map(Result::is_ok).collect();
    assert_eq!(written, [true, true, false]);
    for id in [&rows[0].decision_id, &rows[1].decision_id] {
        let stored = decisions::get(store.pool(), id).await.unwrap();
        assert_eq!(stored.map(|(_, record)| record), Some(vec![1, 2, 3]));
    }
}
