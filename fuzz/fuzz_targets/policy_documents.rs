//! Arbitrary text as the decision graph (GoRules JDM JSON) of a policy draft, as
//! `PublishPolicy` and `SimulatePolicy` receive it: validated and compiled as the rules
//! service does, and, when it compiles, evaluated on an eligible claim or proposal.
//!
//! Fails on a panic; a graph that compiles must evaluate to a decision or a reported engine
//! failure, never hang or crash the service.
#![no_main]

use std::sync::LazyLock;

use chrono::NaiveDate;
use libfuzzer_sys::fuzz_target;
use subsidy_common::Money;
use subsidy_proto::rules as pb;
use subsidy_rules::domain::compute_voucher::{BenefitRating, Claim, ComputeType};
use subsidy_rules::domain::data_infra::{Category, Proposal};
use subsidy_rules::domain::simulation::{Subject, evaluate_subject};

/// The shipped drafts, one per program.
static SHIPPED: LazyLock<Vec<pb::PolicyDraft>> = LazyLock::new(subsidy_rules::policy_file::shipped);

fn subject(program: pb::Program) -> Subject {
    match program {
        pb::Program::DataInfra => Subject::DataInfra(Proposal {
            proposal_id: "p-1".into(),
            applicant_uscc: "91370100MA00000010".into(),
            region_code: "370102".into(),
            category: Category::TrustedDataSpace,
            requested_amount: Money::from_yuan(8_000_000).expect("an amount"),
        }),
        _ => Subject::ComputeVoucher(Claim {
            buyer_uscc: "91370100MA00000010".into(),
            seller_uscc: "91370100MA00000029".into(),
            contract_number: "SD-AI-2025-0001".into(),
            signing_date: NaiveDate::from_ymd_opt(2025, 6, 30).expect("a date"),
            contract_total: Money::from_yuan(1_000_000).expect("an amount"),
            compute_type: ComputeType::AiAccelerator,
            data_center_division_code: "370102".into(),
            related_party_declared: false,
            benefit_rating: BenefitRating::Unrated,
            enterprise_usage: Money::ZERO,
        }),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, document)) = data.split_first() else {
        return;
    };
    let Ok(document) = std::str::from_utf8(document) else {
        return;
    };
    let mut draft = SHIPPED[pick as usize % SHIPPED.len()].clone();
    draft.document_json = document.to_owned();
    let Ok(policy) = subsidy_rules::compiler::validate_draft("policy", &draft) else {
        return;
    };
    let _ = evaluate_subject(&policy, &subject(draft.program()), &|_| false, true);
});
