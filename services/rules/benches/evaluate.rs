//! In-process evaluations per second: the shipped 2025 policies run by the ZEN engine plus the
//! typed checks, without gRPC or database. Run with
//! `cargo bench -p subsidy-rules --bench evaluate`.

use std::hint::black_box;

use chrono::NaiveDate;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use subsidy_common::Money;
use subsidy_rules::domain::compute_voucher::{self, BenefitRating, Claim, ComputeType};
use subsidy_rules::domain::data_infra::{self, Category, Proposal};
use subsidy_rules::domain::policy::{CompiledPolicy, ShortfallMode};
use subsidy_rules::domain::ranking::{self, Candidate, Mean};

fn shipped(program: subsidy_proto::rules::Program) -> CompiledPolicy {
    let draft = subsidy_rules::policy_file::shipped()
        .into_iter()
        .find(|d| d.program() == program)
        .expect("shipped policy");
    subsidy_rules::compiler::validate_draft("policy", &draft).expect("valid shipped policy")
}

fn claim() -> Claim {
    Claim {
        buyer_uscc: subsidy_common::uscc::complete("91370100MA0000001").to_string(),
        seller_uscc: subsidy_common::uscc::complete("91370100MA0000002").to_string(),
        contract_number: "SD-AI-2025-0001".into(),
        signing_date: NaiveDate::from_ymd_opt(2025, 6, 30).unwrap(),
        contract_total: "12345.67".parse().unwrap(),
        compute_type: ComputeType::AiAccelerator,
        data_center_division_code: "370102".into(),
        related_party_declared: false,
        benefit_rating: BenefitRating::High,
        enterprise_usage: Money::from_yuan(1_000_000).unwrap(),
    }
}

fn evaluations(c: &mut Criterion) {
    let voucher = shipped(subsidy_proto::rules::Program::ComputeVoucher);
    let infra = shipped(subsidy_proto::rules::Program::DataInfra);
    let claim = claim();
    let proposal = Proposal {
        proposal_id: "p-1".into(),
        applicant_uscc: subsidy_common::uscc::complete("12370000MB0000003").to_string(),
        region_code: "370102".into(),
        category: Category::DataField,
        requested_amount: Money::from_yuan(8_000_000).unwrap(),
    };
    let mut group = c.benchmark_group("evaluate");
    group.throughput(Throughput::Elements(1));
    group.bench_function("compute_voucher_with_trace", |b| {
        b.iter(|| compute_voucher::evaluate(&voucher, black_box(&claim), false, true).unwrap())
    });
    group.bench_function("compute_voucher_without_trace", |b| {
        b.iter(|| compute_voucher::evaluate(&voucher, black_box(&claim), false, false).unwrap())
    });
    group.bench_function("data_infra_with_trace", |b| {
        b.iter(|| data_infra::evaluate(&infra, black_box(&proposal), true).unwrap())
    });
    group.finish();

    let round: Vec<Candidate> = (0..1000)
        .map(|i| Candidate {
            proposal_id: format!("p-{i:04}"),
            requested: Money::from_yuan(1_000_000 + (i * 7919) % 9_000_000).unwrap(),
            mean: Mean::of_scores(&[(i % 101) as u32, ((i * 31) % 101) as u32, 77]).unwrap(),
            submitted: (1_740_000_000 + i, 0),
        })
        .collect();
    let mut group = c.benchmark_group("rank");
    group.throughput(Throughput::Elements(1));
    group.bench_function("selection_round_1000_candidates", |b| {
        b.iter(|| {
            ranking::rank(
                Money::from_yuan(40_000_000).unwrap(),
                black_box(&round),
                Money::from_yuan(10_000_000).unwrap(),
                ShortfallMode::Partial,
            )
        })
    });
    group.finish();
}

criterion_group!(benches, evaluations);
criterion_main!(benches);
