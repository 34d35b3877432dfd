//! The rules service over gRPC: evaluation, validation, policy publication and immutability,
//! idempotency, simulation, ranking and the denylist, on a fresh database per test.

mod support;

use subsidy_proto::rules as pb;
use subsidy_proto::status::{reason, violated_fields};
use support::*;
use tonic::Code;

fn timestamp(rfc3339: &str) -> prost_types::Timestamp {
    let instant = chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap();
    prost_types::Timestamp {
        seconds: instant.timestamp(),
        nanos: 0,
    }
}

/// The 2025 compute-voucher graph with the LOW rating's rate lowered to 3 %.
fn low_rating_three_percent(document: String) -> String {
    document.replace(
        r#""rating": "'LOW'", "rate-out": "0.05""#,
        r#""rating": "'LOW'", "rate-out": "0.03""#,
    )
}

#[tokio::test]
async fn the_shipped_2025_policies_are_published_on_first_start_and_listed() {
    // Proves: both programs' 2025.1 policies are seeded once, listed without documents and
    // fetched with them; seeding again (a restart) changes nothing.
    let url = fresh_db("rules_seed").await;
    let store = store(&url, true).await;
    subsidy_rules::seed_shipped_policies(&store)
        .await
        .expect("seeding twice is harmless");
    let mut client = spawn(store).await;
    let list = client
        .list_policies(pb::ListPoliciesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = list
        .policies
        .iter()
        .map(|p| format!("{}@{}", p.policy_id, p.version))
        .collect();
    assert_eq!(names, ["compute-voucher@2025.1", "data-infra@2025.1"]);
    assert!(list.policies.iter().all(|p| p.document_json.is_empty()));
    assert!(list.policies.iter().all(|p| p.publisher == "system:seed"));
    assert!(list.next_page_token.is_empty());
    let policy = client
        .get_policy(pb::GetPolicyRequest {
            policy_id: "compute-voucher".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .policy
        .unwrap();
    assert_eq!(policy.version, "2025.1");
    assert_eq!(policy.state(), pb::PolicyState::Published);
    assert!(policy.document_json.contains("decisionTableNode"));
    assert_eq!(policy.content_sha256.len(), 64);
    let Some(pb::policy_parameters::ProgramParameters::ComputeVoucher(parameters)) =
        policy.parameters.unwrap().program_parameters
    else {
        panic!("compute-voucher parameters");
    };
    assert_eq!(parameters.rate_max, "0.05");
    assert_eq!(fen_of(&parameters.enterprise_cap), 500_000_000);
    assert_eq!(parameters.shortfall_mode(), pb::ShortfallMode::Waitlist);
}

#[tokio::test]
async fn an_evaluation_explains_itself_and_records_the_policy_version() {
    // Proves: a decision carries a decision id, the exact policy version, the rate, the
    // entitlement, every failed check with zh and en messages, and a trace; only the id and time
    // change between two identical calls.
    let url = fresh_db("rules_evaluate").await;
    let mut client = spawn(store(&url, true).await).await;
    let mut claim = wire_claim();
    claim.contract_total = cny(1_234_567);
    let decision = client
        .evaluate_compute_voucher(evaluate_request(claim.clone()))
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    assert!(decision.eligible, "{decision:?}");
    assert_eq!(fen_of(&decision.entitlement), 61_728);
    assert_eq!(decision.rate_applied, "0.05");
    assert_eq!(fen_of(&decision.enterprise_cap_remaining), 500_000_000);
    assert_eq!(
        (
            decision.policy_id.as_str(),
            decision.policy_version.as_str()
        ),
        ("compute-voucher", "2025.1")
    );
    assert!(uuid::Uuid::parse_str(&decision.decision_id).is_ok());
    assert!(
        decision
            .trace
            .iter()
            .any(|s| s.node_kind == "decisionTableNode")
    );
    assert!(decision.trace.iter().any(|s| s.node_kind == "typed"));

    let second = client
        .evaluate_compute_voucher(evaluate_request(claim.clone()))
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    assert_ne!(second.decision_id, decision.decision_id);
    let strip = |mut d: pb::Decision| {
        d.decision_id.clear();
        d.evaluate_time = None;
        d
    };
    assert_eq!(strip(second), strip(decision));

    claim.compute_type = pb::ComputeType::GeneralPurposeHosting as i32;
    claim.data_center_division_code = "110105".into();
    let refused = client
        .evaluate_compute_voucher(evaluate_request(claim))
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    assert!(!refused.eligible);
    assert_eq!(
        reasons(&refused),
        ["COMPUTE_NOT_AI", "DATA_CENTER_OUTSIDE_SHANDONG"]
    );
    assert_eq!(refused.failed_checks[0].field, "claim.compute_type");
    assert!(
        refused
            .failed_checks
            .iter()
            .all(|c| !c.message_zh.is_empty() && !c.message_en.is_empty())
    );
    assert_eq!(fen_of(&refused.entitlement), 0);
}

#[tokio::test]
async fn a_signing_time_is_judged_by_its_day_in_asia_shanghai() {
    // Proves: 2025-12-31 23:59 in Asia/Shanghai is inside the 2025 window and 2026-01-01 00:00
    // is not, and a signing time that contradicts the signing date is refused.
    let url = fresh_db("rules_signing_time").await;
    let mut client = spawn(store(&url, true).await).await;
    let at = |time: &str| {
        let mut claim = wire_claim();
        claim.signing_date = None;
        claim.signing_time = Some(timestamp(time));
        claim
    };
    for (time, inside) in [
        ("2025-12-31T23:59:00+08:00", true),
        ("2025-12-31T15:59:59Z", true),
        ("2026-01-01T00:00:00+08:00", false),
        ("2024-12-31T23:59:59+08:00", false),
        ("2025-01-01T00:00:00+08:00", true),
    ] {
        let decision = client
            .evaluate_compute_voucher(evaluate_request(at(time)))
            .await
            .unwrap()
            .into_inner()
            .decision
            .unwrap();
        assert_eq!(
            decision.eligible,
            inside,
            "{time}: {:?}",
            reasons(&decision)
        );
        if !inside {
            assert_eq!(reasons(&decision), ["SIGNED_OUTSIDE_WINDOW"], "{time}");
        }
    }
    let mut contradicting = at("2026-01-01T00:00:00+08:00");
    contradicting.signing_date = date(2025, 12, 31);
    let status = client
        .evaluate_compute_voucher(evaluate_request(contradicting))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["claim.signing_time"]);
}

#[tokio::test]
async fn malformed_evaluations_are_refused_with_field_violations() {
    // Proves: each kind of malformed input is INVALID_ARGUMENT naming the field, and nothing is
    // evaluated.
    let url = fresh_db("rules_bad_input").await;
    let mut client = spawn(store(&url, true).await).await;
    let money = |currency: &str, units: i64, nanos: i32| {
        Some(subsidy_proto::google::r#type::Money {
            currency_code: currency.into(),
            units,
            nanos,
        })
    };
    let base = wire_claim();
    let cases: Vec<(pb::ComputeVoucherClaim, &str)> = vec![
        (
            pb::ComputeVoucherClaim {
                contract_total: money("CNY", 1, 5_000_000),
                ..base.clone()
            },
            "claim.contract_total",
        ),
        (
            pb::ComputeVoucherClaim {
                contract_total: money("USD", 100, 0),
                ..base.clone()
            },
            "claim.contract_total",
        ),
        (
            pb::ComputeVoucherClaim {
                contract_total: money("CNY", -1, 0),
                ..base.clone()
            },
            "claim.contract_total",
        ),
        (
            pb::ComputeVoucherClaim {
                contract_total: None,
                ..base.clone()
            },
            "claim.contract_total",
        ),
        (
            pb::ComputeVoucherClaim {
                enterprise_usage: None,
                ..base.clone()
            },
            "claim.enterprise_usage",
        ),
        (
            pb::ComputeVoucherClaim {
                compute_type: pb::ComputeType::Unspecified as i32,
                ..base.clone()
            },
            "claim.compute_type",
        ),
        (
            pb::ComputeVoucherClaim {
                compute_type: 42,
                ..base.clone()
            },
            "claim.compute_type",
        ),
        (
            pb::ComputeVoucherClaim {
                benefit_rating: 9,
                ..base.clone()
            },
            "claim.benefit_rating",
        ),
        (
            pb::ComputeVoucherClaim {
                data_center_division_code: "37010".into(),
                ..base.clone()
            },
            "claim.data_center_division_code",
        ),
        (
            pb::ComputeVoucherClaim {
                contract_number: " ".into(),
                ..base.clone()
            },
            "claim.contract_number",
        ),
        (
            pb::ComputeVoucherClaim {
                contract_number: "x".repeat(65),
                ..base.clone()
            },
            "claim.contract_number",
        ),
        (
            pb::ComputeVoucherClaim {
                signing_date: date(2025, 2, 30),
                ..base.clone()
            },
            "claim.signing_date",
        ),
        (
            pb::ComputeVoucherClaim {
                signing_date: None,
                ..base.clone()
            },
            "claim.signing_date",
        ),
        (
            pb::ComputeVoucherClaim {
                signing_date: None,
                signing_time: Some(prost_types::Timestamp {
                    seconds: 1_750_000_000,
                    nanos: -1,
                }),
                ..base.clone()
            },
            "claim.signing_time",
        ),
        (
            pb::ComputeVoucherClaim {
                buyer_uscc: "9".repeat(65),
                ..base.clone()
            },
            "claim.buyer_uscc",
        ),
    ];
    for (claim, field) in cases {
        let status = client
            .evaluate_compute_voucher(evaluate_request(claim.clone()))
            .await
            .expect_err("bad input is refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{claim:?}");
        assert_eq!(reason(&status).as_deref(), Some("INVALID_ARGUMENT"));
        assert!(
            violated_fields(&status).contains(&field.to_string()),
            "{field} in {:?}",
            violated_fields(&status)
        );
    }
    let status = client
        .evaluate_compute_voucher(pb::EvaluateComputeVoucherRequest {
            claim: None,
            policy_version: "2025".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["claim", "policy_version"]);
    let status = client
        .evaluate_data_infra_proposal(pb::EvaluateDataInfraProposalRequest {
            proposal: Some(pb::DataInfraProposal {
                category: 0,
                region_code: "abc".into(),
                ..wire_proposal()
            }),
            policy_version: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&status),
        ["proposal.region_code", "proposal.category"]
    );
}

#[tokio::test]
async fn an_unknown_version_is_not_found_and_an_empty_service_has_no_policy() {
    // Proves: NOT_FOUND/POLICY_NOT_FOUND for a version never published, and
    // FAILED_PRECONDITION/NO_POLICY_PUBLISHED before any policy is published.
    let url = fresh_db("rules_no_policy").await;
    let mut client = spawn(store(&url, false).await).await;
    let status = client
        .evaluate_compute_voucher(evaluate_request(wire_claim()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status).as_deref(), Some("NO_POLICY_PUBLISHED"));
    let status = client
        .evaluate_compute_voucher(pb::EvaluateComputeVoucherRequest {
            claim: Some(wire_claim()),
            policy_version: "2031.7".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(reason(&status).as_deref(), Some("POLICY_NOT_FOUND"));
    let status = client
        .get_policy(pb::GetPolicyRequest {
            policy_id: "no-such-program".into(),
            version: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn policies_with_script_nodes_are_refused() {
    // Proves: a JavaScript function node makes a policy POLICY_HAS_SCRIPT_NODE, naming the
    // node, whether published or only validated, and nothing is stored.
    let url = fresh_db("rules_script").await;
    let mut client = spawn(store(&url, true).await).await;
    let scripted = draft("compute-voucher", "2025.2", |document| {
        document.replacen(
            r#""nodes": ["#,
            r#""nodes": [{"id": "js", "type": "functionNode", "name": "random rate",
              "content": {"source": "export const handler = async () => ({ rate: Math.random() });"}},"#,
            1,
        )
    });
    for validate_only in [false, true] {
        let status = client
            .publish_policy(pb::PublishPolicyRequest {
                request_id: "script-1".into(),
                policy: Some(scripted.clone()),
                validate_only,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(reason(&status).as_deref(), Some("POLICY_HAS_SCRIPT_NODE"));
        assert_eq!(violated_fields(&status), ["policy.document_json"]);
    }
    let listed = client
        .list_policies(pb::ListPoliciesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.policies.len(), 2, "nothing was stored");
}

#[tokio::test]
async fn invalid_policies_are_refused_with_the_field_that_is_wrong() {
    // Proves: broken graphs, graphs that disagree with the typed parameters, and bad parameters
    // are refused before anything is stored.
    let url = fresh_db("rules_invalid_policy").await;
    let mut client = spawn(store(&url, true).await).await;
    let cases: Vec<(pb::PolicyDraft, &str, &str)> = vec![
        (
            draft("compute-voucher", "2025.2", |_| "{not json".into()),
            "POLICY_INVALID",
            "policy.document_json",
        ),
        (
            draft("compute-voucher", "2025.2", |d| {
                d.replace(
                    "claim.computeType == 'AI_ACCELERATOR'",
                    "claim.computeType ==",
                )
            }),
            "POLICY_INVALID",
            "policy.document_json",
        ),
        (
            draft("compute-voucher", "2025.2", |d| {
                d.replace("\"0.05\"", "\"0.06\"")
            }),
            "POLICY_INVALID",
            "policy.document_json",
        ),
        (
            draft("compute-voucher", "2025.2", |d| {
                d.replace(
                    "claim.signingDate <= policy.windowEnd",
                    "claim.signingDate <= 20251130",
                )
            }),
            "POLICY_INVALID",
            "policy.document_json",
        ),
        (
            draft("compute-voucher", "2025.2", |d| {
                d.replace("checks.buyerNotOnDenylist", "checks.somethingElse")
            }),
            "POLICY_INVALID",
            "policy.document_json",
        ),
        (
            pb::PolicyDraft {
                version: "2025.02".into(),
                ..draft("compute-voucher", "2025.2", |d| d)
            },
            "INVALID_ARGUMENT",
            "policy.version",
        ),
        (
            pb::PolicyDraft {
                effective_end: date(2024, 12, 31),
                ..draft("compute-voucher", "2025.2", |d| d)
            },
            "INVALID_ARGUMENT",
            "policy.effective_end",
        ),
        (
            pb::PolicyDraft {
                parameters: shipped_draft("data-infra").parameters,
                ..draft("compute-voucher", "2025.2", |d| d)
            },
            "INVALID_ARGUMENT",
            "policy.parameters",
        ),
        (
            {
                let mut d = draft("compute-voucher", "2025.2", |d| d);
                if let Some(pb::policy_parameters::ProgramParameters::ComputeVoucher(p)) = d
                    .parameters
                    .as_mut()
                    .and_then(|p| p.program_parameters.as_mut())
                {
                    p.rate_max = "0.051".into();
                }
                d
            },
            "INVALID_ARGUMENT",
            "policy.parameters.compute_voucher.rate_max",
        ),
        (
            {
                let mut d = draft("data-infra", "2025.2", |d| d);
                if let Some(pb::policy_parameters::ProgramParameters::DataInfra(p)) = d
                    .parameters
                    .as_mut()
                    .and_then(|p| p.program_parameters.as_mut())
                {
                    p.shortfall_mode = pb::ShortfallMode::Waitlist as i32;
                }
                d
            },
            "INVALID_ARGUMENT",
            "policy.parameters.data_infra.shortfall_mode",
        ),
    ];
    for (i, (policy, expected_reason, field)) in cases.into_iter().enumerate() {
        let status = client
            .publish_policy(publish_request(&format!("invalid-{i}"), policy))
            .await
            .expect_err("an invalid policy is refused");
        assert_eq!(status.code(), Code::InvalidArgument, "case {i}: {status:?}");
        assert_eq!(
            reason(&status).as_deref(),
            Some(expected_reason),
            "case {i}"
        );
        assert!(
            violated_fields(&status).contains(&field.to_string()),
            "case {i}: {field} in {:?}",
            violated_fields(&status)
        );
    }
    let status = client
        .publish_policy(publish_request("", draft("data-infra", "2025.2", |d| d)))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["request_id"]);
}

#[tokio::test]
async fn a_new_version_applies_to_new_evaluations_and_published_versions_are_immutable() {
    // Proves: after 2025.2 is published, evaluations record 2025.2 and use its rates, 2025.1
    // stays available by name, the same version cannot be published again, and the database
    // refuses to change or delete a published row.
    let url = fresh_db("rules_publish").await;
    let store = store(&url, true).await;
    let inspect = store.db().clone();
    let mut client = spawn(store).await;
    let mut low = wire_claim();
    low.benefit_rating = pb::BenefitRating::Low as i32;
    let before = client
        .evaluate_compute_voucher(evaluate_request(low.clone()))
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    assert_eq!(before.policy_version, "2025.1");
    assert_eq!(fen_of(&before.entitlement), 5_000_000);

    let mut request = publish_request(
        "publish-2025.2",
        draft("compute-voucher", "2025.2", low_rating_three_percent),
    );
    let published = client
        .publish_policy(tonic::Request::new(request.clone()))
        .await
        .unwrap()
        .into_inner()
        .policy
        .unwrap();
    assert_eq!(published.state(), pb::PolicyState::Published);
    // The publisher is the authenticated caller (the kit's operator, admitted as admin).
    assert_eq!(published.publisher, "admin:kit-operator");
    assert!(published.publish_time.is_some());

    let after = client
        .evaluate_compute_voucher(evaluate_request(low.clone()))
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    assert_eq!(after.policy_version, "2025.2");
    assert_eq!(after.rate_applied, "0.03");
    assert_eq!(fen_of(&after.entitlement), 3_000_000);
    let pinned = client
        .evaluate_compute_voucher(pb::EvaluateComputeVoucherRequest {
            claim: Some(low),
            policy_version: "2025.1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    assert_eq!(pinned.policy_version, "2025.1");
    assert_eq!(fen_of(&pinned.entitlement), 5_000_000);

    request.request_id = "publish-2025.2-again".into();
    let status = client.publish_policy(request).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(reason(&status).as_deref(), Some("POLICY_VERSION_EXISTS"));

    for statement in [
        "UPDATE policy_versions SET description = 'changed' WHERE version = '2025.2'",
        "DELETE FROM policy_versions WHERE version = '2025.1'",
    ] {
        let refused = sqlx::query(statement).execute(&inspect.pool).await;
        assert!(refused.is_err(), "{statement} must be refused");
    }
    let rows: i64 = sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM policy_versions")
        .fetch_one(&inspect.pool)
        .await
        .unwrap();
    assert_eq!(rows, 3);
}

#[tokio::test]
async fn a_publication_is_idempotent_by_request_id_also_after_a_restart() {
    // Proves: replaying a publication returns the original response, a reused request id with
    // another request is REQUEST_ID_REUSED, validate_only stores nothing, and a restarted
    // server still knows the replay.
    let url = fresh_db("rules_publish_idem").await;
    let mut client = spawn(store(&url, true).await).await;
    let request = publish_request("idem-1", draft("data-infra", "2025.2", |d| d));
    let validated = client
        .publish_policy(pb::PublishPolicyRequest {
            request_id: String::new(),
            validate_only: true,
            ..request.clone()
        })
        .await
        .unwrap()
        .into_inner()
        .policy
        .unwrap();
    assert_eq!(validated.state(), pb::PolicyState::Draft);
    assert!(validated.publish_time.is_none());
    let first = client
        .publish_policy(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first.policy.as_ref().unwrap().content_sha256,
        validated.content_sha256,
        "the hash covers the content, not the publication"
    );
    let replay = client
        .publish_policy(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replay, first);
    let status = client
        .publish_policy(publish_request(
            "idem-1",
            draft("data-infra", "2025.3", |d| d),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(reason(&status).as_deref(), Some("REQUEST_ID_REUSED"));

    let mut restarted = spawn(store(&url, true).await).await;
    let after_restart = restarted
        .publish_policy(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after_restart, first);
}

#[tokio::test]
async fn a_version_published_through_one_replica_is_used_by_another() {
    // Proves: replicas sharing a database see each other's publications before their next
    // evaluation.
    let url = fresh_db("rules_replicas").await;
    let mut first = spawn(store(&url, true).await).await;
    let mut second = spawn(store(&url, false).await).await;
    let mut low = wire_claim();
    low.benefit_rating = pb::BenefitRating::Low as i32;
    let decision =
        |d: tonic::Response<pb::EvaluateComputeVoucherResponse>| d.into_inner().decision.unwrap();
    let before = decision(
        second
            .evaluate_compute_voucher(evaluate_request(low.clone()))
            .await
            .unwrap(),
    );
    assert_eq!(before.policy_version, "2025.1");
    first
        .publish_policy(publish_request(
            "replica-1",
            draft("compute-voucher", "2025.2", low_rating_three_percent),
        ))
        .await
        .unwrap();
    let after = decision(
        second
            .evaluate_compute_voucher(evaluate_request(low))
            .await
            .unwrap(),
    );
    assert_eq!(after.policy_version, "2025.2");
    assert_eq!(fen_of(&after.entitlement), 3_000_000);
}

#[tokio::test]
async fn a_simulation_compares_a_draft_with_the_published_policy() {
    // Proves: per-case outcomes and totals of the draft next to the baseline's, with changed
    // cases flagged, nothing stored, and cases of the wrong program refused.
    let url = fresh_db("rules_simulate").await;
    let mut client = spawn(store(&url, true).await).await;
    let case = |id: &str, rating: pb::BenefitRating, usage_fen: i64, total_fen: i64| {
        let mut claim = wire_claim();
        claim.benefit_rating = rating as i32;
        claim.enterprise_usage = cny(usage_fen);
        claim.contract_total = cny(total_fen);
        pb::SimulationCase {
            case_id: id.into(),
            subject: Some(pb::simulation_case::Subject::ComputeVoucher(claim)),
        }
    };
    let mut hosting = case("hosting", pb::BenefitRating::High, 0, 100_000_000);
    if let Some(pb::simulation_case::Subject::ComputeVoucher(claim)) = &mut hosting.subject {
        claim.compute_type = pb::ComputeType::GeneralPurposeHosting as i32;
    }
    let request = pb::SimulatePolicyRequest {
        draft: Some(draft("compute-voucher", "2025.2", low_rating_three_percent)),
        cases: vec![
            case("high", pb::BenefitRating::High, 0, 100_000_000),
            case("low", pb::BenefitRating::Low, 0, 100_000_000),
            case(
                "low-near-cap",
                pb::BenefitRating::Low,
                499_000_000,
                100_000_000,
            ),
            hosting,
        ],
        baseline_version: String::new(),
        include_trace: false,
    };
    let response = client
        .simulate_policy(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        response.draft.as_ref().unwrap().state(),
        pb::PolicyState::Draft
    );
    assert_eq!(response.baseline.as_ref().unwrap().version, "2025.1");
    let outcomes: Vec<_> = response
        .results
        .iter()
        .map(|r| {
            (
                r.case_id.as_str(),
                fen_of(&r.draft_decision.as_ref().unwrap().entitlement),
                fen_of(&r.baseline_decision.as_ref().unwrap().entitlement),
                r.changed,
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("high", 5_000_000, 5_000_000, false),
            ("low", 3_000_000, 5_000_000, true),
            ("low-near-cap", 1_000_000, 1_000_000, false),
            ("hosting", 0, 0, false),
        ]
    );
    assert!(
        response
            .results
            .iter()
            .all(|r| r.draft_decision.as_ref().unwrap().trace.is_empty())
    );
    let draft = response.draft_totals.unwrap();
    let baseline = response.baseline_totals.unwrap();
    assert_eq!((draft.case_count, draft.eligible_count), (4, 3));
    assert_eq!(fen_of(&draft.total_subsidy), 9_000_000);
    assert_eq!(fen_of(&baseline.total_subsidy), 11_000_000);
    assert_eq!(draft.enterprise_cap_reached_count, 1);
    assert_eq!(baseline.enterprise_cap_reached_count, 1);

    let mut wrong = request;
    wrong.cases.push(pb::SimulationCase {
        case_id: "proposal".into(),
        subject: Some(pb::simulation_case::Subject::DataInfra(wire_proposal())),
    });
    let status = client.simulate_policy(wrong).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["cases[4].subject"]);
    let listed = client
        .list_policies(pb::ListPoliciesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.policies.len(), 2, "a simulation stores nothing");
}

#[tokio::test]
async fn a_selection_round_is_ranked_under_the_policy_shortfall_mode() {
    // Proves: the round is ranked by mean score with the 2025 `partial` shortfall, ties go to
    // the earlier submission, oversized requests are not selected, and bad rounds are refused.
    let url = fresh_db("rules_rank").await;
    let mut client = spawn(store(&url, true).await).await;
    let candidate =
        |id: &str, requested_yuan: i64, scores: Vec<u32>, second: i64| pb::SelectionCandidate {
            proposal_id: id.into(),
            requested_amount: cny(requested_yuan * 100),
            expert_scores: scores,
            mean_score: String::new(),
            submit_time: Some(prost_types::Timestamp {
                seconds: 1_740_000_000 + second,
                nanos: 0,
            }),
        };
    let request = pb::RankSelectionRoundRequest {
        pool_available: cny(4_000_000_000),
        candidates: vec![
            candidate("late-tie", 9_000_000, vec![90, 80], 50),
            candidate("early-tie", 9_000_000, vec![85], 10),
            candidate("best", 10_000_000, vec![99, 97], 30),
            candidate("too-big", 12_000_000, vec![100], 1),
            candidate("short", 8_000_000, vec![80], 5),
            candidate("after", 1_000_000, vec![70], 5),
        ],
        policy_version: String::new(),
    };
    let response = client
        .rank_selection_round(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.shortfall_mode(), pb::ShortfallMode::Partial);
    assert_eq!(response.policy_version, "2025.1");
    let awards: Vec<_> = response
        .awards
        .iter()
        .map(|a| {
            (
                a.rank,
                a.proposal_id.as_str(),
                fen_of(&a.awarded) / 100,
                a.reason.as_str(),
            )
        })
        .collect();
    assert_eq!(
        awards,
        [
            (1, "too-big", 0, "REQUEST_ABOVE_PROJECT_CAP"),
            (2, "best", 10_000_000, "FULLY_FUNDED"),
            (3, "early-tie", 9_000_000, "FULLY_FUNDED"),
            (4, "late-tie", 9_000_000, "FULLY_FUNDED"),
            (5, "short", 8_000_000, "FULLY_FUNDED"),
            (6, "after", 1_000_000, "FULLY_FUNDED"),
        ]
    );
    assert_eq!(response.awards[2].mean_score, "85.0000");

    let mut tight = request.clone();
    tight.pool_available = cny(3_000_000_000);
    let response = client
        .rank_selection_round(tight)
        .await
        .unwrap()
        .into_inner();
    let tail: Vec<_> = response.awards[4..]
        .iter()
        .map(|a| {
            (
                a.proposal_id.as_str(),
                fen_of(&a.awarded) / 100,
                a.outcome(),
            )
        })
        .collect();
    assert_eq!(
        tail,
        [
            ("short", 2_000_000, pb::AwardOutcome::PartiallyAwarded),
            ("after", 0, pb::AwardOutcome::NotSelected),
        ]
    );
    assert_eq!(fen_of(&response.total_awarded), 3_000_000_000);
    assert_eq!(fen_of(&response.pool_remaining), 0);

    let mut bad = request;
    bad.candidates[1].proposal_id = "late-tie".into();
    bad.candidates[2].mean_score = "98.5".into();
    bad.candidates[3].expert_scores = vec![101];
    bad.candidates[4].submit_time = None;
    let status = client.rank_selection_round(bad).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&status),
        [
            "candidates[1].proposal_id",
            "candidates[2].expert_scores",
            "candidates[3].expert_scores",
            "candidates[4].submit_time"
        ]
    );
}

async fn evaluate_default(
    client: &mut subsidy_proto::rules::rules_service_client::RulesServiceClient<
        subsidy_testkit::Channel,
    >,
) -> pb::Decision {
    client
        .evaluate_compute_voucher(evaluate_request(wire_claim()))
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap()
}

#[tokio::test]
async fn a_replaced_denylist_is_applied_to_the_next_evaluation() {
    // Proves: after ReplaceDenylist returns, a listed buyer fails BUYER_ON_DENYLIST; the list
    // pages in USCC order with its hash; replacements count additions and removals, replay by
    // request id, and refuse invalid or duplicate codes.
    let url = fresh_db("rules_denylist").await;
    let mut client = spawn(store(&url, true).await).await;
    assert!(evaluate_default(&mut client).await.eligible);

    let request = pb::ReplaceDenylistRequest {
        request_id: "deny-1".into(),
        entries: vec![
            entry(1, "拒不履行法院判决"),
            entry(7, "虚假申报"),
            entry(5, "x"),
        ],
    };
    let replaced = client
        .replace_denylist(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            replaced.entry_count,
            replaced.added_count,
            replaced.removed_count
        ),
        (3, 3, 0)
    );
    let decision = evaluate_default(&mut client).await;
    assert_eq!(reasons(&decision), ["BUYER_ON_DENYLIST"]);
    assert_eq!(
        client.replace_denylist(request).await.unwrap().into_inner(),
        replaced
    );

    let first_page = client
        .list_denylist_entries(pb::ListDenylistEntriesRequest {
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first_page.content_sha256, replaced.content_sha256);
    assert_eq!(first_page.entries.len(), 2);
    let second_page = client
        .list_denylist_entries(pb::ListDenylistEntriesRequest {
            page_size: 2,
            page_token: first_page.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(second_page.next_page_token.is_empty());
    let codes: Vec<_> = first_page
        .entries
        .iter()
        .chain(&second_page.entries)
        .map(|e| e.uscc.clone())
        .collect();
    let mut sorted = codes.clone();
    sorted.sort();
    assert_eq!(codes, sorted);
    assert_eq!(codes.len(), 3);

    let replaced = client
        .replace_denylist(pb::ReplaceDenylistRequest {
            request_id: "deny-2".into(),
            entries: vec![entry(7, "虚假申报"), entry(9, "y")],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            replaced.entry_count,
            replaced.added_count,
            replaced.removed_count
        ),
        (2, 1, 2)
    );
    assert!(evaluate_default(&mut client).await.eligible);

    let mut invalid = entry(2, "z");
    let wrong_check = if invalid.uscc.ends_with('0') {
        "1"
    } else {
        "0"
    };
    invalid.uscc.replace_range(17..18, wrong_check);
    let status = client
        .replace_denylist(pb::ReplaceDenylistRequest {
            request_id: "deny-3".into(),
            entries: vec![entry(1, "a"), entry(1, "b"), invalid, entry(3, "")],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&status),
        ["entries[1].uscc", "entries[2].uscc", "entries[3].reason"]
    );
}

#[tokio::test]
async fn concurrent_publications_of_one_version_store_it_exactly_once() {
    // Proves: eight callers publishing the same new version at once get one success and seven
    // POLICY_VERSION_EXISTS (never a storage error), and exactly one row is stored.
    let url = fresh_db("rules_publish_race").await;
    let store = store(&url, true).await;
    let inspect = store.db().clone();
    let client = spawn(store).await;
    let attempts = (0..8).map(|i| {
        let mut client = client.clone();
        async move {
            client
                .publish_policy(publish_request(
                    &format!("race-{i}"),
                    draft("compute-voucher", "2025.2", low_rating_three_percent),
                ))
                .await
        }
    });
    let results = futures::future::join_all(attempts).await;
    let successes = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(successes, 1, "{results:?}");
    for status in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
        assert_eq!(reason(status).as_deref(), Some("POLICY_VERSION_EXISTS"));
    }
    let rows: i64 = sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM policy_versions WHERE version = '2025.2'",
    )
    .fetch_one(&inspect.pool)
    .await
    .unwrap();
    assert_eq!(rows, 1);
}
