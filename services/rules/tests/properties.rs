//! Property tests of the money invariants and of the ranking.

mod support;

use proptest::prelude::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use subsidy_common::Money;
use subsidy_rules::domain::compute_voucher::{self, BenefitRating};
use subsidy_rules::domain::policy::ShortfallMode;
use subsidy_rules::domain::ranking::{self, Candidate, Mean, Outcome};
use support::*;

const CAP_FEN: i64 = 500_000_000;

/// The shipped compute-voucher policy, compiled once for every case.
static POLICY: std::sync::LazyLock<subsidy_rules::domain::policy::CompiledPolicy> =
    std::sync::LazyLock::new(|| shipped_policy("compute-voucher"));

fn rating(n: u8) -> BenefitRating {
    BenefitRating::ALL[usize::from(n) % BenefitRating::ALL.len()]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn an_entitlement_never_exceeds_five_percent_nor_the_cap_remaining(
        total_fen in prop_oneof![0i64..=10_000_000, 0i64..=1_000_000_000_000],
        usage_fen in prop_oneof![0i64..=CAP_FEN, CAP_FEN - 10_000..=CAP_FEN + 10_000, 0i64..=2 * CAP_FEN],
        rating_index in 0u8..4,
        signing_day in 0u32..400,
    ) {
        // Proves: for any claim, 0 ≤ entitlement ≤ 5 % × total, ≤ cap remaining, exact to the
        // fen, and the same input always gives the same decision.
        let policy = &*POLICY;
        let mut claim = claim();
        claim.contract_total = Money::from_fen(total_fen).unwrap();
        claim.enterprise_usage = Money::from_fen(usage_fen).unwrap();
        claim.benefit_rating = rating(rating_index);
        claim.signing_date = day(2024, 12, 15) + chrono::Days::new(u64::from(signing_day));
        let decision = compute_voucher::evaluate(policy, &claim, false, false).unwrap();
        let entitlement = decision.entitlement;
        let cap_remaining = Money::from_fen((CAP_FEN - usage_fen).max(0)).unwrap();
        prop_assert!(entitlement.decimal() >= Decimal::ZERO);
        prop_assert!(entitlement.decimal() <= dec!(0.05) * claim.contract_total.decimal());
        prop_assert!(entitlement <= cap_remaining);
        prop_assert_eq!(entitlement.decimal().scale(), 2);
        prop_assert_eq!(decision.enterprise_cap_remaining, Some(cap_remaining));
        if decision.eligible {
            // Exactly round-down of min(5 % × total, cap remaining).
            let exact = dec!(0.05) * claim.contract_total.decimal();
            let expected = Money::round_down(exact).unwrap().min(cap_remaining);
            prop_assert_eq!(entitlement, expected);
        } else {
            prop_assert!(entitlement.is_zero());
        }
        let again = compute_voucher::evaluate(policy, &claim, false, false).unwrap();
        prop_assert_eq!(decision, again);
    }
}

fn candidates() -> impl Strategy<Value = Vec<Candidate>> {
    prop::collection::vec(
        (
            1i64..=1_500_000_000,
            prop::collection::vec(0u32..=100, 1..6),
            0i64..50,
        ),
        1..40,
    )
    .prop_map(|rows| {
        rows.into_iter()
            .enumerate()
            .map(|(i, (requested_fen, scores, second))| Candidate {
                proposal_id: format!("p-{i:03}"),
                requested: Money::from_fen(requested_fen).unwrap(),
                mean: Mean::of_scores(&scores).unwrap(),
                submitted: (1_735_000_000 + second, 0),
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn a_round_never_awards_more_than_the_pool_or_the_project_cap(
        round in candidates(),
        pool_fen in prop_oneof![0i64..=4_000_000_000, 0i64..=100_000_000],
        skip in any::<bool>(),
        rotate in 0usize..40,
    ) {
        // Proves: total ≤ pool, each award ≤ min(request, 10,000,000.00), every candidate ranked
        // once in score order, and the input order does not change the result.
        let cap = yuan(10_000_000);
        let pool = Money::from_fen(pool_fen).unwrap();
        let mode = if skip { ShortfallMode::Skip } else { ShortfallMode::Partial };
        let result = ranking::rank(pool, &round, cap, mode);
        let total: i64 = result.awards.iter().map(|a| a.awarded.fen()).sum();
        prop_assert_eq!(total, result.total_awarded.fen());
        prop_assert!(result.total_awarded <= pool);
        prop_assert_eq!(result.pool_remaining.fen(), pool_fen - total);
        prop_assert_eq!(result.awards.len(), round.len());
        let mut partials = 0;
        for (i, award) in result.awards.iter().enumerate() {
            prop_assert_eq!(award.rank as usize, i + 1);
            let candidate = round.iter().find(|c| c.proposal_id == award.proposal_id).unwrap();
            prop_assert!(award.awarded <= cap);
            prop_assert!(award.awarded <= candidate.requested);
            match award.outcome {
                Outcome::Awarded => prop_assert_eq!(award.awarded, candidate.requested),
                Outcome::PartiallyAwarded => partials += 1,
                Outcome::NotSelected => prop_assert!(award.awarded.is_zero()),
            }
        }
        prop_assert!(partials <= 1);
        if skip {
            prop_assert_eq!(partials, 0);
        }
        for pair in result.awards.windows(2) {
            let a = round.iter().find(|c| c.proposal_id == pair[0].proposal_id).unwrap();
            let b = round.iter().find(|c| c.proposal_id == pair[1].proposal_id).unwrap();
            prop_assert!(a.mean > b.mean || (a.mean == b.mean && a.submitted <= b.submitted));
        }
        let mut shuffled = round.clone();
        let len = shuffled.len();
        shuffled.rotate_left(rotate % len);
        shuffled.reverse();
        prop_assert_eq!(ranking::rank(pool, &shuffled, cap, mode), result);
    }
}
