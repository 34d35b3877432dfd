//! The probes: sample claims and proposals run through a draft's graph before it may be
//! published (and through every stored version when it is loaded), so that a graph that lacks an
//! output its program needs, or disagrees with its own typed parameters, is refused at
//! validation instead of failing (or deciding wrongly) on a real claim.

use chrono::NaiveDate;
use subsidy_common::Money;

use crate::domain::compute_voucher::{self, BenefitRating, Claim, ComputeType, GraphVerdict};
use crate::domain::data_infra::{self, Category, Proposal};
use crate::domain::policy::CompiledPolicy;

/// Checks that a compute-voucher graph returns every check and a rate for every benefit rating,
/// that its rates stay within `rate_max`, and that its window check agrees with the window of the
/// parameters on both edges. Returns why not.
pub fn compute_voucher(policy: &CompiledPolicy) -> Result<(), String> {
    let p = compute_voucher::parameters(policy);
    let buyer = subsidy_common::uscc::complete("91370100MA3CXP001");
    let seller = subsidy_common::uscc::complete("91370200MA3CXP002");
    let base = Claim {
        buyer_uscc: buyer.to_string(),
        seller_uscc: seller.to_string(),
        contract_number: "PROBE-1".into(),
        signing_date: p.window.start(),
        contract_total: Money::from_yuan(1_000_000).expect("small"),
        compute_type: ComputeType::AiAccelerator,
        data_center_division_code: "370102".into(),
        related_party_declared: false,
        benefit_rating: BenefitRating::Unrated,
        enterprise_usage: Money::ZERO,
    };
    let run = |claim: &Claim| {
        compute_voucher::run_graph(policy, claim, Some(&buyer), Some(&seller), false, false)
            .map_err(|e| format!("on a probe claim {}: {e}", describe(claim)))
    };
    rates_within_max(policy, &base, &run)?;
    window_agrees(policy, &base, &run)
}

type ProbeRun<'a> = dyn Fn(&Claim) -> Result<GraphVerdict, String> + 'a;

/// The graph's rate for every benefit rating is at most `rate_max`.
fn rates_within_max(policy: &CompiledPolicy, base: &Claim, run: &ProbeRun) -> Result<(), String> {
    let p = compute_voucher::parameters(policy);
    for rating in BenefitRating::ALL {
        let claim = Claim {
            benefit_rating: rating,
            ..base.clone()
        };
        let verdict = run(&claim)?;
        if verdict.rate > p.rate_max.decimal() {
            return Err(format!(
                "the graph's rate {} for benefit rating {} is above rate_max {}",
                verdict.rate.normalize(),
                rating.as_str(),
                p.rate_max.decimal().normalize()
            ));
        }
    }
    Ok(())
}

/// The graph's `signedInWindow` check passes on the first and last day of the parameters'
/// window and fails on the days just outside it.
fn window_agrees(policy: &CompiledPolicy, base: &Claim, run: &ProbeRun) -> Result<(), String> {
    let p = compute_voucher::parameters(policy);
    let window_check = |day: NaiveDate| -> Result<bool, String> {
        let verdict = run(&Claim {
            signing_date: day,
            ..base.clone()
        })?;
        Ok(verdict
            .checks
            .iter()
            .any(|(key, passed)| *key == "signedInWindow" && *passed))
    };
    let day_before = p
        .window
        .start()
        .pred_opt()
        .expect("not the first day of time");
    let day_after = p.window.end().succ_opt().expect("not the last day of time");
    for (day, expected) in [
        (p.window.start(), true),
        (p.window.end(), true),
        (day_before, false),
        (day_after, false),
    ] {
        if window_check(day)? != expected {
            return Err(format!(
                "the graph's signedInWindow check says {} for a contract signed on {day}, which disagrees with window_start {} and window_end {}",
                !expected,
                p.window.start(),
                p.window.end()
            ));
        }
    }
    Ok(())
}

fn describe(claim: &Claim) -> String {
    format!(
        "(signed {}, rating {})",
        claim.signing_date,
        claim.benefit_rating.as_str()
    )
}

/// Checks that a data-infrastructure graph returns every check for every category. Returns why
/// not.
pub fn data_infra(policy: &CompiledPolicy) -> Result<(), String> {
    let applicant = subsidy_common::uscc::complete("12370000MB1CXP003");
    for category in Category::ALL {
        let proposal = Proposal {
            proposal_id: "probe".into(),
            applicant_uscc: applicant.to_string(),
            region_code: "370102".into(),
            category,
            requested_amount: Money::from_yuan(1_000_000).expect("small"),
        };
        data_infra::run_graph(policy, &proposal, Some(&applicant), false)
            .map_err(|e| format!("on a probe proposal of category {}: {e}", category.as_str()))?;
    }
    Ok(())
}
