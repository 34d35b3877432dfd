//! The registry of compute providers over gRPC: registration with data centers, status changes
//! kept as an append-only history, idempotency by request id, and refusals with stable reasons,
//! on a fresh database per test.

mod support;

use subsidy_proto::rules as pb;
use subsidy_proto::status::{reason, violated_fields};
use support::*;
use tonic::Code;

fn data_center(name: &str, code: &str, capacity: &str) -> pb::DataCenter {
    pb::DataCenter {
        name: name.into(),
        division_code: code.into(),
        capacity_pflops: capacity.into(),
        status: pb::DataCenterStatus::Unspecified as i32,
    }
}

fn registration(request_id: &str, n: usize) -> pb::RegisterProviderRequest {
    pb::RegisterProviderRequest {
        request_id: request_id.into(),
        uscc: shandong(n).to_string(),
        name: "济南超算智算有限公司".into(),
        effective_date: date(2025, 1, 1),
        reason: "省大数据局2025年第1批算力服务商名单".into(),
        data_centers: vec![
            data_center("济南智算中心", "370102", "0120.50"),
            data_center("青岛西海岸算力中心", "370211", "80"),
        ],
    }
}

fn status_change(
    request_id: &str,
    n: usize,
    status: pb::ProviderStatus,
    (y, m, d): (i32, i32, i32),
) -> pb::UpdateProviderStatusRequest {
    pb::UpdateProviderStatusRequest {
        request_id: request_id.into(),
        uscc: shandong(n).to_string(),
        status: status as i32,
        effective_date: date(y, m, d),
        reason: "核查发现问题 (found in an inspection)".into(),
    }
}

#[tokio::test]
async fn a_provider_is_registered_changes_status_and_keeps_every_change() {
    // Proves: a registration answers the provider ADMITTED with canonical capacities and replays
    // by request id; suspend, readmit and revoke each append one change (actor, date, reason)
    // and the listing filters by current status; the history's rows cannot be changed.
    let url = fresh_db("rules_providers").await;
    let store = store(&url, false).await;
    let inspect = store.db().clone();
    let mut client = spawn(store).await;

    let registered = client
        .register_provider(registration("reg-1", 20))
        .await
        .unwrap()
        .into_inner()
        .provider
        .unwrap();
    assert_eq!(registered.status(), pb::ProviderStatus::Admitted);
    assert_eq!(registered.status_effective_date, date(2025, 1, 1));
    let capacities: Vec<_> = registered
        .data_centers
        .iter()
        .map(|d| (d.capacity_pflops.as_str(), d.status()))
        .collect();
    assert_eq!(
        capacities,
        [
            ("120.5", pb::DataCenterStatus::InService),
            ("80", pb::DataCenterStatus::InService)
        ]
    );
    let replayed = client
        .register_provider(registration("reg-1", 20))
        .await
        .unwrap()
        .into_inner()
        .provider
        .unwrap();
    assert_eq!(replayed, registered);

    let steps = [
        ("s-1", pb::ProviderStatus::Suspended, (2025, 6, 1)),
        ("s-2", pb::ProviderStatus::Admitted, (2025, 9, 1)),
        ("s-3", pb::ProviderStatus::Revoked, (2025, 9, 1)),
    ];
    for (request_id, status, day) in steps {
        let changed = client
            .update_provider_status(status_change(request_id, 20, status, day))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(changed.provider.unwrap().status(), status);
        assert_eq!(changed.change.unwrap().status(), status);
    }
    let shown = client
        .get_provider(pb::GetProviderRequest {
            uscc: shandong(20).to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    let history: Vec<_> = shown
        .history
        .iter()
        .map(|c| (c.sequence, c.status(), c.effective_date))
        .collect();
    assert_eq!(
        history,
        [
            (1, pb::ProviderStatus::Admitted, date(2025, 1, 1)),
            (2, pb::ProviderStatus::Suspended, date(2025, 6, 1)),
            (3, pb::ProviderStatus::Admitted, date(2025, 9, 1)),
            (4, pb::ProviderStatus::Revoked, date(2025, 9, 1)),
        ]
    );
    assert!(shown.history.iter().all(|c| !c.actor.is_empty()));
    assert_eq!(shown.provider.unwrap().data_centers.len(), 2);

    client
        .register_provider(registration("reg-2", 21))
        .await
        .unwrap();
    let admitted = client
        .list_providers(pb::ListProvidersRequest {
            status: pb::ProviderStatus::Admitted as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let codes: Vec<_> = admitted.providers.iter().map(|p| p.uscc.clone()).collect();
    assert_eq!(codes, [shandong(21).to_string()]);
    let first = client
        .list_providers(pb::ListProvidersRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let second = client
        .list_providers(pb::ListProvidersRequest {
            page_size: 1,
            page_token: first.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.providers.len() + second.providers.len(), 2);
    assert!(first.providers[0].uscc < second.providers[0].uscc);

    for statement in [
        "UPDATE provider_status_changes SET reason = 'x'",
        "DELETE FROM provider_status_changes",
    ] {
        sqlx::query(statement)
            .execute(&inspect.pool)
            .await
            .expect_err(statement);
    }
}

#[tokio::test]
async fn refused_registry_calls_carry_stable_reasons_and_change_nothing() {
    // Proves the registry's refusals: a second registration (PROVIDER_EXISTS), an unknown
    // provider (PROVIDER_NOT_FOUND), the status it has or any change after revocation
    // (PROVIDER_STATUS_UNCHANGED), a change dated before the current status
    // (PROVIDER_STATUS_DATE_OUT_OF_ORDER), a request id reused (REQUEST_ID_REUSED), and invalid
    // fields named one by one; afterwards the history holds only the changes that succeeded.
    let url = fresh_db("rules_providers_refused").await;
    let mut client = spawn(store(&url, false).await).await;
    client
        .register_provider(registration("reg-1", 30))
        .await
        .unwrap();

    let status = client
        .register_provider(registration("reg-2", 30))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::AlreadyExists, Some("PROVIDER_EXISTS"))
    );
    let status = client
        .register_provider(registration("reg-1", 31))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::AlreadyExists, Some("REQUEST_ID_REUSED"))
    );
    let status = client
        .update_provider_status(status_change(
            "u-1",
            32,
            pb::ProviderStatus::Suspended,
            (2025, 6, 1),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::NotFound, Some("PROVIDER_NOT_FOUND"))
    );
    let status = client
        .update_provider_status(status_change(
            "u-2",
            30,
            pb::ProviderStatus::Admitted,
            (2025, 6, 1),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::FailedPrecondition, Some("PROVIDER_STATUS_UNCHANGED"))
    );
    let status = client
        .update_provider_status(status_change(
            "u-3",
            30,
            pb::ProviderStatus::Suspended,
            (2024, 12, 31),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (
            Code::FailedPrecondition,
            Some("PROVIDER_STATUS_DATE_OUT_OF_ORDER")
        )
    );
    client
        .update_provider_status(status_change(
            "u-4",
            30,
            pb::ProviderStatus::Revoked,
            (2025, 3, 1),
        ))
        .await
        .unwrap();
    let status = client
        .update_provider_status(status_change(
            "u-5",
            30,
            pb::ProviderStatus::Admitted,
            (2025, 4, 1),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_deref()),
        (Code::FailedPrecondition, Some("PROVIDER_STATUS_UNCHANGED"))
    );

    let mut invalid = registration("reg-3", 33);
    invalid.uscc.replace_range(17..18, "I");
    invalid.name = String::new();
    invalid.data_centers = vec![
        data_center("A", "37010", "1"),
        data_center("B", "370102", "1.5e3"),
        data_center("B", "370102", "0"),
        data_center("C", "370102", "12.3456"),
    ];
    let status = client.register_provider(invalid).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&status),
        [
            "uscc",
            "name",
            "data_centers[0].division_code",
            "data_centers[1].capacity_pflops",
            "data_centers[2].name",
            "data_centers[2].capacity_pflops",
            "data_centers[3].capacity_pflops",
        ]
    );
    let mut empty = registration("reg-4", 33);
    empty.data_centers.clear();
    let status = client.register_provider(empty).await.unwrap_err();
    assert_eq!(violated_fields(&status), ["data_centers"]);
    let mut unset = status_change("u-6", 30, pb::ProviderStatus::Unspecified, (2025, 5, 1));
    unset.effective_date = None;
    let status = client.update_provider_status(unset).await.unwrap_err();
    assert_eq!(violated_fields(&status), ["status", "effective_date"]);

    let history = client
        .get_provider(pb::GetProviderRequest {
            uscc: shandong(30).to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .history;
    assert_eq!(history.len(), 2);
    let listed = client
        .list_providers(pb::ListProvidersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .providers;
    assert_eq!(listed.len(), 1);
}

#[tokio::test]
async fn concurrent_registrations_of_one_provider_register_it_once() {
    // Proves: eight registrations of one USCC under different request ids at once give one
    // success and seven PROVIDER_EXISTS (never a storage error), and one history row.
    let url = fresh_db("rules_providers_race").await;
    let client = spawn(store(&url, false).await).await;
    let attempts = (0..8).map(|i| {
        let mut client = client.clone();
        async move {
            client
                .register_provider(registration(&format!("race-{i}"), 40))
                .await
        }
    });
    let results = futures::future::join_all(attempts).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1, "{results:?}");
    for status in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(
            reason(status).as_deref(),
            Some("PROVIDER_EXISTS"),
            "{status:?}"
        );
    }
    let history = client
        .clone()
        .get_provider(pb::GetProviderRequest {
            uscc: shandong(40).to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .history;
    assert_eq!(history.len(), 1);
}

/// The shipped compute-voucher draft as version `version` with the registry check switched on.
fn registry_required(version: &str) -> pb::PolicyDraft {
    let mut draft = draft("compute-voucher", version, |document| document);
    let Some(pb::policy_parameters::ProgramParameters::ComputeVoucher(parameters)) = draft
        .parameters
        .as_mut()
        .and_then(|p| p.program_parameters.as_mut())
    else {
        panic!("compute-voucher parameters");
    };
    parameters.provider_registry_required = true;
    draft
}

async fn evaluate(
    client: &mut subsidy_proto::rules::rules_service_client::RulesServiceClient<
        subsidy_testkit::Channel,
    >,
    claim: pb::ComputeVoucherClaim,
    version: &str,
) -> pb::Decision {
    client
        .evaluate_compute_voucher(pb::EvaluateComputeVoucherRequest {
            claim: Some(claim),
            policy_version: version.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap()
}

/// The checks of a decision: each one's reason code and whether it passed, in order.
fn checks(decision: &pb::Decision) -> Vec<(String, bool)> {
    decision
        .checks
        .iter()
        .map(|check| (check.reason.clone(), check.passed))
        .collect()
}

/// The checks of the compute-voucher policy in the order it runs them, every one passed but
/// `registry` (the registry's checks and their outcomes, run after the graph's when a version
/// requires them).
fn every_check(registry: &[(&str, bool)]) -> Vec<(String, bool)> {
    let before = [
        "USCC_INVALID",
        "USCC_INVALID",
        "BUYER_IS_SELLER",
        "RELATED_PARTY",
        "COMPUTE_NOT_AI",
        "DATA_CENTER_OUTSIDE_SHANDONG",
        "SIGNED_OUTSIDE_WINDOW",
        "BUYER_ON_DENYLIST",
    ];
    let after = ["AMOUNT_OUT_OF_RANGE", "ENTERPRISE_CAP_REACHED"];
    let passed = |code: &&str| ((*code).to_owned(), true);
    before
        .iter()
        .map(passed)
        .chain(registry.iter().map(|(code, ok)| ((*code).to_owned(), *ok)))
        .chain(after.iter().map(passed))
        .collect()
}

#[tokio::test]
async fn with_the_registry_switched_on_only_admitted_sellers_with_registered_data_centers_qualify()
{
    // Proves the registry check: under a version with provider_registry_required, an
    // unregistered seller fails SELLER_NOT_ADMITTED_PROVIDER and DATA_CENTER_NOT_REGISTERED
    // (explained in Chinese and English, with a trace step), while the shipped 2025.1 version
    // ignores the registry; each decision lists every check its version ran, the registry's
    // two (passed or failed) only under the version that requires them; once registered the claim is eligible, a data center outside the
    // seller's list fails DATA_CENTER_NOT_REGISTERED; after a suspension, a contract signed
    // before it still qualifies and one signed after it does not; and every decision replays
    // identically after the suspension, because the registry's answer is stored with it.
    let url = fresh_db("rules_providers_check").await;
    let mut client = spawn(store(&url, true).await).await;
    client
        .publish_policy(publish_request(
            "publish-2025.2",
            registry_required("2025.2"),
        ))
        .await
        .unwrap();

    let unregistered = evaluate(&mut client, wire_claim(), "").await;
    assert!(!unregistered.eligible);
    assert_eq!(
        reasons(&unregistered),
        ["SELLER_NOT_ADMITTED_PROVIDER", "DATA_CENTER_NOT_REGISTERED"]
    );
    assert!(
        unregistered
            .failed_checks
            .iter()
            .all(|c| !c.message_zh.is_empty() && !c.message_en.is_empty())
    );
    assert!(
        unregistered
            .trace
            .iter()
            .any(|step| step.node_id == "rust:provider_registry" && !step.passed),
        "{:?}",
        unregistered.trace
    );
    let shipped = evaluate(&mut client, wire_claim(), "2025.1").await;
    assert!(shipped.eligible);
    // Each decision lists the checks its version ran: the registry's two only under 2025.2.
    let registry = [
        ("SELLER_NOT_ADMITTED_PROVIDER", false),
        ("DATA_CENTER_NOT_REGISTERED", false),
    ];
    assert_eq!(checks(&shipped), every_check(&[]));
    assert_eq!(checks(&unregistered), every_check(&registry));

    // The seller of `wire_claim` (shandong(2)), admitted from 2025-01-01 with a data center in
    // 370102 (the claim's) and a retired one in 370211.
    let mut seller = registration("reg-seller", 2);
    seller.data_centers[1].status = pb::DataCenterStatus::Retired as i32;
    client.register_provider(seller).await.unwrap();
    let funded = evaluate(&mut client, wire_claim(), "").await;
    assert!(funded.eligible, "{:?}", funded.failed_checks);
    let passed = [
        ("SELLER_NOT_ADMITTED_PROVIDER", true),
        ("DATA_CENTER_NOT_REGISTERED", true),
    ];
    assert_eq!(checks(&funded), every_check(&passed));
    let admitted = &funded.checks[8];
    assert_eq!(admitted.field, "claim.seller_uscc");
    assert_eq!(
        admitted.message_en,
        "the seller was an admitted compute provider on the signing date"
    );
    assert!(!admitted.message_zh.is_empty());
    let mut retired = wire_claim();
    retired.data_center_division_code = "370211".into();
    let retired = evaluate(&mut client, retired, "").await;
    assert_eq!(reasons(&retired), ["DATA_CENTER_NOT_REGISTERED"]);

    client
        .update_provider_status(status_change(
            "suspend-seller",
            2,
            pb::ProviderStatus::Suspended,
            (2025, 6, 1),
        ))
        .await
        .unwrap();
    let after = evaluate(&mut client, wire_claim(), "").await;
    assert_eq!(reasons(&after), ["SELLER_NOT_ADMITTED_PROVIDER"]);
    let mut earlier = wire_claim();
    earlier.signing_date = date(2025, 5, 31);
    earlier.contract_number = "SD-AI-2025-0002".into();
    assert!(evaluate(&mut client, earlier, "").await.eligible);

    let auditor = subsidy_testkit::auth::token(
        "auditor-1",
        &[subsidy_proto::access::Role::Auditor],
        &[],
        None,
    );
    for decision in [&unregistered, &funded, &retired, &after] {
        let mut request = tonic::Request::new(pb::GetDecisionRequest {
            decision_id: decision.decision_id.clone(),
        });
        request
            .metadata_mut()
            .insert("authorization", subsidy_testkit::auth::bearer(&auditor));
        let stored = client
            .get_decision(request)
            .await
            .unwrap()
            .into_inner()
            .decision
            .unwrap();
        let Some(pb::stored_decision::Inputs::ComputeVoucher(inputs)) = stored.inputs else {
            panic!("compute-voucher inputs");
        };
        assert!(inputs.provider_registry.is_some());
        let mut request = tonic::Request::new(pb::ReplayDecisionRequest {
            decision_id: decision.decision_id.clone(),
        });
        request
            .metadata_mut()
            .insert("authorization", subsidy_testkit::auth::bearer(&auditor));
        let replayed = client.replay_decision(request).await.unwrap().into_inner();
        assert!(
            replayed.identical,
            "{}: {:?}",
            decision.decision_id, replayed.differences
        );
    }
}

#[tokio::test]
async fn a_simulated_draft_with_the_registry_switched_on_asks_todays_registry() {
    // Proves SimulatePolicy under a draft with provider_registry_required: the unregistered
    // seller's case fails SELLER_NOT_ADMITTED_PROVIDER under the draft and passes under the
    // shipped baseline (changed), and a registered seller's case passes under both.
    let url = fresh_db("rules_providers_simulate").await;
    let mut client = spawn(store(&url, true).await).await;
    client
        .register_provider(registration("reg-seller", 2))
        .await
        .unwrap();
    let mut unregistered = wire_claim();
    unregistered.seller_uscc = shandong(3).to_string();
    let case = |case_id: &str, claim: pb::ComputeVoucherClaim| pb::SimulationCase {
        case_id: case_id.into(),
        subject: Some(pb::simulation_case::Subject::ComputeVoucher(claim)),
    };
    let simulated = client
        .simulate_policy(pb::SimulatePolicyRequest {
            draft: Some(registry_required("2025.2")),
            cases: vec![
                case("registered", wire_claim()),
                case("unregistered", unregistered),
            ],
            baseline_version: "2025.1".into(),
            include_trace: false,
        })
        .await
        .unwrap()
        .into_inner();
    let outcomes: Vec<_> = simulated
        .results
        .iter()
        .map(|r| {
            (
                r.case_id.as_str(),
                reasons(r.draft_decision.as_ref().unwrap()),
                r.baseline_decision.as_ref().unwrap().eligible,
                r.changed,
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("registered", vec![], true, false),
            (
                "unregistered",
                vec![
                    "SELLER_NOT_ADMITTED_PROVIDER".to_owned(),
                    "DATA_CENTER_NOT_REGISTERED".to_owned()
                ],
                true,
                true
            ),
        ]
    );
}
