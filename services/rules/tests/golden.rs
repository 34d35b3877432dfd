//! Golden cases written from POLICY.md, evaluated in-process under the shipped 2025 policies.

mod support;

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use subsidy_common::Money;
use subsidy_rules::domain::compute_voucher::{self, BenefitRating, Claim, ComputeType};
use subsidy_rules::domain::data_infra::{self, Category, Proposal};
use subsidy_rules::domain::graph::PolicyGraph;
use subsidy_rules::domain::policy::{CompiledPolicy, Parameters};
use subsidy_rules::domain::reasons::Reason;
use support::*;

struct VoucherCase {
    name: &'static str,
    claim: Claim,
    denylisted: bool,
    reasons: &'static [Reason],
    entitlement: &'static str,
    cap_reached: bool,
}

fn with(change: impl FnOnce(&mut Claim)) -> Claim {
    let mut claim = claim();
    change(&mut claim);
    claim
}

fn voucher_cases() -> Vec<VoucherCase> {
    let case = |name, claim, reasons, entitlement| VoucherCase {
        name,
        claim,
        denylisted: false,
        reasons,
        entitlement,
        cap_reached: false,
    };
    vec![
        case(
            "5% of 12,345.67 is 617.28 (617.2835 rounded down)",
            with(|c| c.contract_total = money("12345.67")),
            &[],
            "617.28",
        ),
        case("5% of 1,000,000.00 is 50,000.00", claim(), &[], "50000.00"),
        case(
            "5% of 0.19 is 0.00 (0.0095 rounded down), still eligible",
            with(|c| c.contract_total = money("0.19")),
            &[],
            "0.00",
        ),
        VoucherCase {
            cap_reached: true,
            ..case(
                "an enterprise with 4,999,999.99 used gets at most 0.01",
                with(|c| c.enterprise_usage = money("4999999.99")),
                &[],
                "0.01",
            )
        },
        VoucherCase {
            cap_reached: true,
            ..case(
                "an enterprise at its 5,000,000.00 cap gets nothing",
                with(|c| c.enterprise_usage = yuan(5_000_000)),
                &[Reason::EnterpriseCapReached],
                "0.00",
            )
        },
        VoucherCase {
            cap_reached: true,
            ..case(
                "a 200,000,000.00 contract is limited to the 5,000,000.00 cap",
                with(|c| c.contract_total = yuan(200_000_000)),
                &[],
                "5000000.00",
            )
        },
        case(
            "signed 2025-12-31 (Asia/Shanghai) is inside the window",
            with(|c| c.signing_date = day(2025, 12, 31)),
            &[],
            "50000.00",
        ),
        case(
            "signed 2026-01-01 (Asia/Shanghai) is outside the window",
            with(|c| c.signing_date = day(2026, 1, 1)),
            &[Reason::SignedOutsideWindow],
            "0.00",
        ),
        case(
            "signed 2025-01-01 is inside the window",
            with(|c| c.signing_date = day(2025, 1, 1)),
            &[],
            "50000.00",
        ),
        case(
            "signed 2024-12-31 is outside the window",
            with(|c| c.signing_date = day(2024, 12, 31)),
            &[Reason::SignedOutsideWindow],
            "0.00",
        ),
        case(
            "a published valid code from outside Shandong may buy Shandong compute",
            with(|c| c.buyer_uscc = "91110108551385082Q".into()),
            &[],
            "50000.00",
        ),
        case(
            "a corrupted check character of the seller is USCC_INVALID",
            with(|c| c.seller_uscc = "91350100M000100Y44".into()),
            &[Reason::UsccInvalid],
            "0.00",
        ),
        case(
            "a malformed buyer code is USCC_INVALID",
            with(|c| c.buyer_uscc = "NOT-A-CODE".into()),
            &[Reason::UsccInvalid],
            "0.00",
        ),
        case(
            "buyer = seller is refused",
            with(|c| c.seller_uscc = c.buyer_uscc.clone()),
            &[Reason::BuyerIsSeller],
            "0.00",
        ),
        case(
            "a declared related party is refused",
            with(|c| c.related_party_declared = true),
            &[Reason::RelatedParty],
            "0.00",
        ),
        case(
            "general-purpose hosting is not AI compute",
            with(|c| c.compute_type = ComputeType::GeneralPurposeHosting),
            &[Reason::ComputeNotAi],
            "0.00",
        ),
        case(
            "storage alone is not AI compute",
            with(|c| c.compute_type = ComputeType::Storage),
            &[Reason::ComputeNotAi],
            "0.00",
        ),
        case(
            "a data center in Beijing (110105) is outside Shandong",
            with(|c| c.data_center_division_code = "110105".into()),
            &[Reason::DataCenterOutsideShandong],
            "0.00",
        ),
        case(
            "a zero contract total is out of range",
            with(|c| c.contract_total = Money::ZERO),
            &[Reason::AmountOutOfRange],
            "0.00",
        ),
        case(
            "a contract above 10,000,000,000.00 is out of range",
            with(|c| c.contract_total = money("10000000000.01")),
            &[Reason::AmountOutOfRange],
            "0.00",
        ),
        case(
            "every benefit rating gets 5% under the 2025 policy",
            with(|c| c.benefit_rating = BenefitRating::Low),
            &[],
            "50000.00",
        ),
        VoucherCase {
            denylisted: true,
            ..case(
                "a buyer on the dishonesty denylist is refused",
                claim(),
                &[Reason::BuyerOnDenylist],
                "0.00",
            )
        },
        case(
            "every failed check is reported, in the policy's order",
            with(|c| {
                c.seller_uscc = c.buyer_uscc.clone();
                c.compute_type = ComputeType::Storage;
                c.data_center_division_code = "440300".into();
                c.signing_date = day(2026, 2, 1);
                c.contract_total = Money::ZERO;
            }),
            &[
                Reason::BuyerIsSeller,
                Reason::ComputeNotAi,
                Reason::DataCenterOutsideShandong,
                Reason::SignedOutsideWindow,
                Reason::AmountOutOfRange,
            ],
            "0.00",
        ),
    ]
}

#[test]
fn compute_voucher_golden_cases_match_policy_md() {
    // Proves: each POLICY.md default gives the expected eligibility, reasons and entitlement.
    let policy = shipped_policy("compute-voucher");
    for case in voucher_cases() {
        let decision = compute_voucher::evaluate(&policy, &case.claim, case.denylisted, true)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let reasons: Vec<Reason> = decision.failed_checks.iter().map(|c| c.reason).collect();
        assert_eq!(reasons, case.reasons, "{}", case.name);
        assert_eq!(decision.eligible, case.reasons.is_empty(), "{}", case.name);
        assert_eq!(
            decision.entitlement,
            money(case.entitlement),
            "{}",
            case.name
        );
        assert_eq!(
            decision.enterprise_cap_reached, case.cap_reached,
            "{}",
            case.name
        );
        assert_eq!(decision.rate_applied, Some(dec!(0.05)), "{}", case.name);
        assert_eq!(decision.policy_version, "2025.1", "{}", case.name);
        for check in &decision.failed_checks {
            assert!(
                !check.message_zh.is_empty() && !check.message_en.is_empty(),
                "{}",
                case.name
            );
        }
    }
}

#[test]
fn every_single_character_corruption_of_a_valid_code_is_caught() {
    // Proves: the GB 32100-2015 check character catches each one-character change of a code.
    let policy = shipped_policy("compute-voucher");
    let good = "91350100M000100Y43";
    for i in 0..18 {
        let mut bytes = good.as_bytes().to_vec();
        bytes[i] = if bytes[i] == b'1' { b'2' } else { b'1' };
        let bad = String::from_utf8(bytes).unwrap();
        let decision = compute_voucher::evaluate(
            &policy,
            &with(|c| c.seller_uscc = bad.clone()),
            false,
            false,
        )
        .unwrap();
        assert_eq!(
            decision.failed_checks[0].reason,
            Reason::UsccInvalid,
            "{bad}"
        );
        assert_eq!(decision.failed_checks[0].field, "claim.seller_uscc");
    }
}

#[test]
fn the_trace_names_the_graph_nodes_and_the_typed_checks_in_order() {
    // Proves: a decision explains itself: typed checks around the engine's nodes, in order.
    let policy = shipped_policy("compute-voucher");
    let decision = compute_voucher::evaluate(
        &policy,
        &with(|c| c.compute_type = ComputeType::GeneralPurposeHosting),
        false,
        true,
    )
    .unwrap();
    let ids: Vec<&str> = decision.trace.iter().map(|s| s.node_id.as_str()).collect();
    assert_eq!(ids.first(), Some(&"rust:uscc"));
    assert!(
        ids.contains(&"eligibility") && ids.contains(&"rate"),
        "{ids:?}"
    );
    assert_eq!(
        &ids[ids.len() - 4..],
        [
            "rust:contract_total",
            "rust:rate_ceiling",
            "rust:enterprise_cap",
            "rust:entitlement"
        ]
    );
    let eligibility = decision
        .trace
        .iter()
        .find(|s| s.node_id == "eligibility")
        .unwrap();
    assert_eq!(eligibility.node_kind, "expressionNode");
    assert!(
        !eligibility.passed,
        "the failed compute check shows in the trace"
    );
    assert!(
        eligibility
            .output_summary_json
            .contains("\"computeIsAi\":false")
    );
    let rate = decision.trace.iter().find(|s| s.node_id == "rate").unwrap();
    assert_eq!(rate.node_kind, "decisionTableNode");
    let again = compute_voucher::evaluate(
        &policy,
        &with(|c| c.compute_type = ComputeType::GeneralPurposeHosting),
        false,
        true,
    )
    .unwrap();
    assert_eq!(
        decision, again,
        "the same input gives the same decision and trace"
    );
}

/// The shipped compute-voucher policy with its graph's rate table replaced by `rate` and its
/// `rate_max` set to `rate_max`, compiled without the publication probes, as if a policy had
/// slipped past validation.
fn policy_with_graph_rate(rate: &str, rate_max: Decimal) -> CompiledPolicy {
    let shipped = shipped_policy("compute-voucher");
    let mut record = shipped.record.clone();
    record.spec.document_json = record.spec.document_json.replace(
        "\"rate-out\": \"0.05\"",
        &format!("\"rate-out\": \"{rate}\""),
    );
    if let Parameters::ComputeVoucher(p) = &mut record.spec.parameters {
        p.rate_max = subsidy_common::money::Rate::new(rate_max).unwrap();
    }
    CompiledPolicy {
        graph: PolicyGraph::parse(&record.spec.document_json).unwrap(),
        record,
    }
}

#[test]
fn the_typed_rate_ceiling_applies_whatever_the_graph_computes() {
    // Proves: a graph rate above rate_max, or above 5 %, is cut down after the engine.
    let claim = with(|c| c.contract_total = money("12345.67"));
    let generous = policy_with_graph_rate("0.08", dec!(0.05));
    let decision = compute_voucher::evaluate(&generous, &claim, false, false).unwrap();
    assert_eq!(decision.rate_applied, Some(dec!(0.05)));
    assert_eq!(decision.entitlement, money("617.28"));
    let stricter_cap = policy_with_graph_rate("0.05", dec!(0.03));
    let decision = compute_voucher::evaluate(&stricter_cap, &claim, false, false).unwrap();
    assert_eq!(decision.rate_applied, Some(dec!(0.03)));
    assert_eq!(decision.entitlement, money("370.37"));
}

fn proposal_with(change: impl FnOnce(&mut Proposal)) -> Proposal {
    let mut p = proposal();
    change(&mut p);
    p
}

#[test]
fn data_infra_golden_cases_match_policy_md() {
    // Proves: Shandong applicants, allowed categories and the 10,000,000.00 project cap.
    let policy = shipped_policy("data-infra");
    let cases: Vec<(&str, Proposal, &[Reason], &str)> = vec![
        (
            "a trusted data space in Shandong",
            proposal(),
            &[],
            "8000000.00",
        ),
        (
            "a data annotation base at exactly the cap",
            proposal_with(|p| {
                p.category = Category::DataAnnotationBase;
                p.requested_amount = yuan(10_000_000);
            }),
            &[],
            "10000000.00",
        ),
        (
            "one fen above the project cap must be reduced",
            proposal_with(|p| p.requested_amount = money("10000000.01")),
            &[Reason::RequestAboveProjectCap],
            "0.00",
        ),
        (
            "an applicant registered in Beijing is outside Shandong",
            proposal_with(|p| p.applicant_uscc = "91110108551385082Q".into()),
            &[Reason::ApplicantOutsideShandong],
            "0.00",
        ),
        (
            "an invalid applicant code cannot show a Shandong registration",
            proposal_with(|p| p.applicant_uscc = "91370100MA0000001X".into()),
            &[Reason::UsccInvalid, Reason::ApplicantOutsideShandong],
            "0.00",
        ),
        (
            "a zero request is out of range",
            proposal_with(|p| p.requested_amount = Money::ZERO),
            &[Reason::AmountOutOfRange],
            "0.00",
        ),
    ];
    for (name, proposal, expected, entitlement) in cases {
        let decision = data_infra::evaluate(&policy, &proposal, true).unwrap();
        let reasons: Vec<Reason> = decision.failed_checks.iter().map(|c| c.reason).collect();
        assert_eq!(reasons, expected, "{name}");
        assert_eq!(decision.entitlement, money(entitlement), "{name}");
        assert_eq!(decision.rate_applied, None, "{name}");
        assert_eq!(decision.enterprise_cap_remaining, None, "{name}");
    }
}

#[test]
fn the_example_draft_lowers_only_the_low_rating_over_the_example_cases() {
    // Proves: the example files of `subsidyctl policy simulate` validate, and the simulation
    // flags exactly the case rated LOW.
    use subsidy_rules::domain::simulation::{self, Case, Subject};
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/examples");
    let draft =
        subsidy_rules::policy_file::load(&examples.join("compute-voucher-2025.2.policy.json"))
            .unwrap();
    let draft = subsidy_rules::compiler::validate_draft("policy", &draft).unwrap();
    let baseline = shipped_policy("compute-voucher");
    let wire = subsidy_rules::policy_file::load_cases(&examples.join("compute-voucher-cases.json"))
        .unwrap();
    let cases: Vec<Case> = wire
        .into_iter()
        .map(|case| {
            let Some(subsidy_proto::rules::simulation_case::Subject::ComputeVoucher(c)) =
                case.subject
            else {
                panic!("compute-voucher cases");
            };
            let signing_date = match (c.signing_date, c.signing_time) {
                (Some(d), _) => day(d.year, d.month as u32, d.day as u32),
                (None, Some(t)) => subsidy_rules::domain::shanghai_date(
                    chrono::DateTime::from_timestamp(t.seconds, 0).unwrap(),
                ),
                (None, None) => panic!("a signing day"),
            };
            let rating = match c.benefit_rating() {
                subsidy_proto::rules::BenefitRating::High => BenefitRating::High,
                subsidy_proto::rules::BenefitRating::Medium => BenefitRating::Medium,
                subsidy_proto::rules::BenefitRating::Low => BenefitRating::Low,
                subsidy_proto::rules::BenefitRating::Unspecified => BenefitRating::Unrated,
            };
            let compute_type = match c.compute_type() {
                subsidy_proto::rules::ComputeType::AiAccelerator => ComputeType::AiAccelerator,
                subsidy_proto::rules::ComputeType::Storage => ComputeType::Storage,
                _ => ComputeType::GeneralPurposeHosting,
            };
            Case {
                case_id: case.case_id,
                subject: Subject::ComputeVoucher(Claim {
                    buyer_uscc: c.buyer_uscc,
                    seller_uscc: c.seller_uscc,
                    contract_number: c.contract_number,
                    signing_date,
                    contract_total: Money::from_proto(c.contract_total.as_ref().unwrap()).unwrap(),
                    compute_type,
                    data_center_division_code: c.data_center_division_code,
                    related_party_declared: c.related_party_declared,
                    benefit_rating: rating,
                    enterprise_usage: Money::from_proto(c.enterprise_usage.as_ref().unwrap())
                        .unwrap(),
                }),
            }
        })
        .collect();
    let result = simulation::simulate(&draft, &baseline, &cases, &|_| false, false).unwrap();
    let changed: Vec<&str> = result
        .results
        .iter()
        .filter(|r| r.changed)
        .map(|r| r.case_id.as_str())
        .collect();
    assert_eq!(changed, ["2025-0002 low benefit"]);
    assert_eq!(result.draft_totals.total_subsidy, money("1477283.94"));
    assert_eq!(result.baseline_totals.total_subsidy, money("1517283.94"));
}
