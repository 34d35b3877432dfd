//! Test support: the shipped policies compiled in memory, typical claims and proposals, a fresh
//! database per test, and a rules server on port 0.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use subsidy_common::Money;
use subsidy_common::config::ServiceKind;
use subsidy_common::db::{Db, testing};
use subsidy_proto::google::r#type::Date;
use subsidy_proto::rules as pb;
use subsidy_proto::rules::rules_service_client::RulesServiceClient;
use subsidy_rules::domain::compute_voucher::{BenefitRating, Claim, ComputeType};
use subsidy_rules::domain::data_infra::{Category, Proposal};
use subsidy_rules::domain::policy::CompiledPolicy;
use subsidy_rules::{Catalog, Store};
use subsidy_testkit::Channel;

/// The shipped draft of `program` (`compute-voucher` or `data-infra`).
pub fn shipped_draft(policy_id: &str) -> pb::PolicyDraft {
    subsidy_rules::policy_file::shipped()
        .into_iter()
        .find(|d| {
            (d.program() == pb::Program::ComputeVoucher && policy_id == "compute-voucher")
                || (d.program() == pb::Program::DataInfra && policy_id == "data-infra")
        })
        .expect("a shipped policy of the program")
}

/// The shipped policy of `program`, validated and compiled as the service does.
pub fn shipped_policy(policy_id: &str) -> CompiledPolicy {
    subsidy_rules::compiler::validate_draft("policy", &shipped_draft(policy_id))
        .expect("the shipped policy is valid")
}

// The kit's USCC and wire-money helpers (`shandong(n)`: the `n`-th valid USCC registered in
// Shandong); not every test binary uses each of them.
#[allow(unused_imports)]
pub use subsidy_testkit::{cny, fen_of, shandong};

pub fn yuan(n: i64) -> Money {
    Money::from_yuan(n).unwrap()
}

pub fn money(text: &str) -> Money {
    text.parse().unwrap()
}

pub fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

/// An eligible claim: AI compute in Jinan, signed mid-2025, 1,000,000.00, no usage.
pub fn claim() -> Claim {
    Claim {
        buyer_uscc: shandong(1).to_string(),
        seller_uscc: shandong(2).to_string(),
        contract_number: "SD-AI-2025-0001".into(),
        signing_date: day(2025, 6, 30),
        contract_total: yuan(1_000_000),
        compute_type: ComputeType::AiAccelerator,
        data_center_division_code: "370102".into(),
        related_party_declared: false,
        benefit_rating: BenefitRating::Unrated,
        enterprise_usage: Money::ZERO,
    }
}

/// An eligible proposal: a trusted data space in Jinan asking 8,000,000.00.
pub fn proposal() -> Proposal {
    Proposal {
        proposal_id: "p-1".into(),
        applicant_uscc: shandong(3).to_string(),
        region_code: "370102".into(),
        category: Category::TrustedDataSpace,
        requested_amount: yuan(8_000_000),
    }
}

pub fn date(y: i32, m: i32, d: i32) -> Option<Date> {
    Some(Date {
        year: y,
        month: m,
        day: d,
    })
}

/// The wire form of [`claim`].
pub fn wire_claim() -> pb::ComputeVoucherClaim {
    pb::ComputeVoucherClaim {
        buyer_uscc: shandong(1).to_string(),
        seller_uscc: shandong(2).to_string(),
        contract_number: "SD-AI-2025-0001".into(),
        signing_date: date(2025, 6, 30),
        contract_total: cny(100_000_000),
        compute_type: pb::ComputeType::AiAccelerator as i32,
        data_center_division_code: "370102".into(),
        related_party_declared: false,
        benefit_rating: pb::BenefitRating::Unspecified as i32,
        enterprise_usage: cny(0),
        signing_time: None,
    }
}

/// The wire form of [`proposal`].
pub fn wire_proposal() -> pb::DataInfraProposal {
    pb::DataInfraProposal {
        proposal_id: "p-1".into(),
        applicant_uscc: shandong(3).to_string(),
        region_code: "370102".into(),
        category: pb::DataInfraCategory::TrustedDataSpace as i32,
        requested_amount: cny(800_000_000),
    }
}

/// A fresh database for this test (SQLite by default, PostgreSQL with
/// `SUBSIDY_TEST_DATABASE=postgres://…`).
pub async fn fresh_db(label: &str) -> String {
    testing::fresh_database(label).await.url
}

pub async fn connect(url: &str) -> Db {
    Db::connect(url, 8, Duration::from_secs(10))
        .await
        .expect("connect to the test database")
}

/// A migrated store; with `seed`, the shipped policies are published.
pub async fn store(url: &str, seed: bool) -> Store {
    let store = Store::new(connect(url).await);
    store.migrate().await.expect("migrate");
    if seed {
        subsidy_rules::seed_shipped_policies(&store)
            .await
            .expect("seed the shipped policies");
    }
    store
}

/// Serves the rules service over `store` on a free port and returns a connected client.
pub async fn spawn(store: Store) -> RulesServiceClient<Channel> {
    let db = store.db().clone();
    let catalog = Arc::new(Catalog::open(store).await.expect("open the catalog"));
    let channel = subsidy_testkit::fakes::serve_alone(ServiceKind::Rules, Some(db), |config| {
        subsidy_rules::routes(catalog, config)
    })
    .await;
    RulesServiceClient::new(channel)
}

/// The reasons of a decision's failed checks, in order.
pub fn reasons(decision: &pb::Decision) -> Vec<String> {
    decision
        .failed_checks
        .iter()
        .map(|c| c.reason.clone())
        .collect()
}

/// An evaluation of `claim` under the version in effect.
pub fn evaluate_request(claim: pb::ComputeVoucherClaim) -> pb::EvaluateComputeVoucherRequest {
    pb::EvaluateComputeVoucherRequest {
        claim: Some(claim),
        policy_version: String::new(),
    }
}

/// A draft of `policy_id` from the shipped one, with a new version and a changed graph.
pub fn draft(policy_id: &str, version: &str, change: impl Fn(String) -> String) -> pb::PolicyDraft {
    let mut draft = shipped_draft(policy_id);
    draft.version = version.into();
    draft.document_json = change(draft.document_json);
    draft.description = format!("test version {version}");
    draft
}

pub fn publish_request(request_id: &str, policy: pb::PolicyDraft) -> pb::PublishPolicyRequest {
    pb::PublishPolicyRequest {
        request_id: request_id.into(),
        policy: Some(policy),
        validate_only: false,
    }
}

/// A denylist entry of the `n`-th Shandong code.
pub fn entry(n: u32, reason: &str) -> pb::DenylistEntry {
    pb::DenylistEntry {
        uscc: shandong(n as usize).to_string(),
        reason: reason.into(),
        source: "信用中国 (Credit China)".into(),
        listed_date: date(2025, 3, 1),
    }
}
