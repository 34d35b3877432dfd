//! The provider registry through the four real services: under a compute-voucher policy version
//! that switches the registry check on, a claim whose seller is not an admitted provider is
//! INELIGIBLE with its reasons, a claim from an admitted provider's registered data center is
//! funded, and its decision replays identically after the provider is suspended.

use subsidy_common::config::ServiceKind;
use subsidy_proto::application as pb;
use subsidy_proto::google::r#type::Date;
use subsidy_proto::rules as rpb;
use subsidy_proto::rules::rules_service_client::RulesServiceClient;
use subsidy_testkit::requests::*;
use subsidy_testkit::*;

fn day(year: i32, month: i32, day: i32) -> Option<Date> {
    Some(Date { year, month, day })
}

/// The shipped compute-voucher policy as version 2025.2 with `provider_registry_required`.
fn registry_required() -> rpb::PolicyDraft {
    let mut draft = subsidy_rules::policy_file::shipped()
        .into_iter()
        .find(|draft| draft.program() == rpb::Program::ComputeVoucher)
        .expect("the shipped compute-voucher policy");
    draft.version = "2025.2".into();
    draft.description = "2025.1 with the provider registry check".into();
    let Some(rpb::policy_parameters::ProgramParameters::ComputeVoucher(parameters)) = draft
        .parameters
        .as_mut()
        .and_then(|p| p.program_parameters.as_mut())
    else {
        panic!("compute-voucher parameters");
    };
    parameters.provider_registry_required = true;
    draft
}

fn codes(claim: &pb::Claim) -> Vec<String> {
    let decision = claim.decision.as_ref().expect("a decision");
    decision
        .failed_reasons
        .iter()
        .map(|r| r.code.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_registry_check_on_only_admitted_providers_contracts_are_funded_and_replay() {
    // Proves: with 2025.2 (registry check on) published, an unregistered seller's claim is
    // INELIGIBLE with SELLER_NOT_ADMITTED_PROVIDER and DATA_CENTER_NOT_REGISTERED explained in
    // Chinese and English; an admitted provider's claim from its registered Jinan data center is
    // held for review with 5 % of its total; after the provider is suspended a new claim is
    // INELIGIBLE, and the funded claim's decision still replays identically.
    let stack = subsidy_tests::spawn_with(quick_application(&[])).await;
    let mut rules = RulesServiceClient::new(stack.channel(ServiceKind::Rules).await);
    rules
        .publish_policy(rpb::PublishPolicyRequest {
            request_id: "publish-registry".into(),
            policy: Some(registry_required()),
            validate_only: false,
        })
        .await
        .expect("publish 2025.2");
    let mut app = stack.app().await;
    let (a, b) = (shandong(1), shandong(2));
    for who in [&a, &b] {
        register(&mut app, who).await;
    }

    let refused = submitted(
        &mut app,
        "c-1",
        &a,
        contract("REG-1", &seller(1), 100_000_000),
    )
    .await;
    assert_eq!(refused.state(), pb::ClaimState::Ineligible, "{refused:?}");
    assert_eq!(
        codes(&refused),
        ["SELLER_NOT_ADMITTED_PROVIDER", "DATA_CENTER_NOT_REGISTERED"]
    );
    let reasons = &refused.decision.as_ref().unwrap().failed_reasons;
    assert!(
        reasons
            .iter()
            .all(|r| !r.message_zh.is_empty() && !r.message_en.is_empty())
    );

    rules
        .register_provider(rpb::RegisterProviderRequest {
            request_id: "register-seller-2".into(),
            uscc: seller(2).to_string(),
            name: "济南智算有限公司".into(),
            effective_date: day(2025, 1, 1),
            reason: "省大数据局算力服务商名单".into(),
            data_centers: vec![rpb::DataCenter {
                name: "Jinan AI Computing Center".into(),
                division_code: "370102".into(),
                capacity_pflops: "300".into(),
                status: rpb::DataCenterStatus::InService as i32,
            }],
        })
        .await
        .expect("register the seller");
    let funded = submitted(
        &mut app,
        "c-2",
        &b,
        contract("REG-2", &seller(2), 100_000_000),
    )
    .await;
    assert_eq!(funded.state(), pb::ClaimState::PendingReview, "{funded:?}");
    let decision = funded.decision.clone().expect("a decision");
    assert!(decision.eligible);
    assert_eq!(decision.policy_version, "2025.2");
    assert_eq!(decision.entitlement, cny(5_000_000));

    rules
        .update_provider_status(rpb::UpdateProviderStatusRequest {
            request_id: "suspend-seller-2".into(),
            uscc: seller(2).to_string(),
            status: rpb::ProviderStatus::Suspended as i32,
            effective_date: day(2025, 1, 1),
            reason: "核查中 (under inspection)".into(),
        })
        .await
        .expect("suspend the seller");
    let after = submitted(
        &mut app,
        "c-3",
        &a,
        contract("REG-3", &seller(2), 100_000_000),
    )
    .await;
    assert_eq!(after.state(), pb::ClaimState::Ineligible, "{after:?}");
    assert_eq!(codes(&after), ["SELLER_NOT_ADMITTED_PROVIDER"]);

    let replayed = rules
        .replay_decision(rpb::ReplayDecisionRequest {
            decision_id: decision.decision_id.clone(),
        })
        .await
        .expect("replay")
        .into_inner();
    assert!(replayed.identical, "{:?}", replayed.differences);
    stack.shutdown().await;
}
