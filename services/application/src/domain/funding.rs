//! Funding decisions: whether a claim next in line is held now, partly, or waits; how much an
//! approval commits; how a rules rate becomes basis points; and which step a claim takes next.

use rust_decimal::Decimal;
use subsidy_common::Money;

use super::BASIS_POINTS_PER_UNIT;
use super::state::ClaimState;

/// How a claim is served when the pool cannot cover its entitlement (POLICY.md `shortfall`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimShortfall {
    /// Wait in strict submission order until the full entitlement fits.
    Waitlist,
    /// The head of the line receives what is left.
    Partial,
}

/// What to do with a claim that is next in line for money.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FundingPlan {
    /// Hold this amount (the full entitlement, or less under partial funding).
    Reserve(Money),
    /// Wait on the waitlist.
    Wait,
}

/// Decides how to fund a claim that needs `entitlement` from a pool with `available` left.
/// `queue_ahead` says whether older claims are waiting: strict submission order means nobody
/// skips them, whatever money is left.
pub fn plan_funding(
    entitlement: Money,
    available: Money,
    shortfall: ClaimShortfall,
    queue_ahead: bool,
) -> FundingPlan {
    if queue_ahead {
        return FundingPlan::Wait;
    }
    if available >= entitlement {
        return FundingPlan::Reserve(entitlement);
    }
    match shortfall {
        ClaimShortfall::Partial if !available.is_zero() => FundingPlan::Reserve(available),
        _ => FundingPlan::Wait,
    }
}

/// The amount approved on review: the entitlement recomputed on the verified amount, never
/// more than what is held (which already respects the pool and the enterprise cap).
pub fn approved_amount(recomputed_entitlement: Money, reserved: Money) -> Money {
    recomputed_entitlement.min(reserved)
}

/// Whether the hold of a claim in review is to be extended at `now_us`: it expires within
/// `margin_us` (0 turns the extension off), and two thirds of its lifetime (from
/// `hold_set_us`, when it was held or last extended) have passed, so that a margin longer than
/// the hold's lifetime does not extend it at every pass. `Storage::holds_to_extend` selects the
/// same claims.
pub fn hold_extension_due(
    hold_set_us: Option<i64>,
    hold_expires_us: i64,
    now_us: i64,
    margin_us: i64,
) -> bool {
    if margin_us <= 0 || hold_expires_us > now_us.saturating_add(margin_us) {
        return false;
    }
    let set_us = hold_set_us.unwrap_or(0);
    3 * i128::from(now_us) >= i128::from(set_us) + 2 * i128::from(hold_expires_us)
}

/// Converts a decimal rate string of the rules service (`0.05`) to basis points, rounding down;
/// `None` when it is not a rate between 0 and 1.
pub fn rate_basis_points(rate: &str) -> Option<u32> {
    if rate.is_empty() {
        return Some(0);
    }
    let value = Decimal::from_str_exact(rate.trim()).ok()?;
    if value < Decimal::ZERO || value > Decimal::ONE {
        return None;
    }
    let points = (value * Decimal::from(BASIS_POINTS_PER_UNIT)).trunc();
    u32::try_from(points.mantissa() / 10i128.pow(points.scale())).ok()
}

/// The steps of a claim that are recorded but not finished: the flags of its row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingSteps {
    /// A reserve call's amount is recorded; its outcome is not.
    pub reserve_intent: bool,
    /// A commit call's amount is recorded; its outcome is not.
    pub commit_intent: bool,
    /// The recorded hold must still be released.
    pub release_due: bool,
    /// The claim must be (re-)evaluated before it can be funded.
    pub evaluation_due: bool,
    /// Holds made by an unrecorded reserve call must be looked for and released.
    pub orphan_check_due: bool,
    /// The claim has no acceptance number yet (recorded, not numbered by a round).
    pub unnumbered: bool,
}

/// The next step of a claim, in the order that lets a crash at any point converge: an
/// outcome already asked for is resolved before anything new is asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimStep {
    /// Make (or replay) the recorded reserve call and record its outcome.
    ResolveReserve,
    /// Make (or replay) the recorded commit call and record its outcome.
    Commit,
    /// Release the hold of a claim that ended.
    Release,
    /// Give the claim (and every other committed claim of its pool without one) its
    /// acceptance number.
    Number,
    /// Ask the rules service for a decision.
    Evaluate,
    /// Decide how the eligible claim is funded and start the reserve.
    Fund,
    /// Release holds made under the claim's reference that it does not own.
    SweepOrphans,
}

/// The step a claim in `state` with `pending` steps takes next, or `None` when it is settled.
/// `reconciling` allows the orphan sweep, which is only safe once the calls that started the
/// other steps are surely over.
pub fn next_step(state: ClaimState, pending: PendingSteps, reconciling: bool) -> Option<ClaimStep> {
    assert!(
        !pending.reserve_intent || state.awaits_funding(),
        "a reserve intent only exists while a claim awaits funding"
    );
    if pending.reserve_intent {
        Some(ClaimStep::ResolveReserve)
    } else if pending.commit_intent {
        Some(ClaimStep::Commit)
    } else if pending.release_due {
        Some(ClaimStep::Release)
    } else if pending.unnumbered {
        // Whatever its state: every recorded claim has its place in the acceptance order,
        // and a claim is funded only once it has it.
        Some(ClaimStep::Number)
    } else if state.awaits_funding() && pending.evaluation_due {
        Some(ClaimStep::Evaluate)
    } else if state == ClaimState::Submitted {
        Some(ClaimStep::Fund)
    } else if pending.orphan_check_due && reconciling {
        Some(ClaimStep::SweepOrphans)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yuan(n: i64) -> Money {
        Money::from_yuan(n).unwrap()
    }

    #[test]
    fn a_claim_behind_a_waiting_claim_waits_even_when_money_is_left() {
        // Proves strict submission order: nobody skips the waitlist.
        assert_eq!(
            plan_funding(yuan(10), yuan(1_000), ClaimShortfall::Waitlist, true),
            FundingPlan::Wait
        );
        assert_eq!(
            plan_funding(yuan(10), yuan(1_000), ClaimShortfall::Partial, true),
            FundingPlan::Wait
        );
    }

    #[test]
    fn the_head_is_funded_fully_or_waits_or_is_funded_partly_by_policy() {
        // Proves the shortfall switch of POLICY.md: waitlist by default, partial when chosen.
        assert_eq!(
            plan_funding(yuan(10), yuan(10), ClaimShortfall::Waitlist, false),
            FundingPlan::Reserve(yuan(10))
        );
        assert_eq!(
            plan_funding(yuan(10), yuan(9), ClaimShortfall::Waitlist, false),
            FundingPlan::Wait
        );
        assert_eq!(
            plan_funding(yuan(10), yuan(9), ClaimShortfall::Partial, false),
            FundingPlan::Reserve(yuan(9))
        );
        assert_eq!(
            plan_funding(yuan(10), Money::ZERO, ClaimShortfall::Partial, false),
            FundingPlan::Wait
        );
    }

    #[test]
    fn the_approved_amount_never_exceeds_the_hold() {
        // Proves approval never commits more than was reserved.
        assert_eq!(approved_amount(yuan(12), yuan(10)), yuan(10));
        assert_eq!(approved_amount(yuan(8), yuan(10)), yuan(8));
    }

    #[test]
    fn rates_become_basis_points_rounded_down() {
        // Proves the rate conversion is exact and never rounds up.
        assert_eq!(rate_basis_points("0.05"), Some(500));
        assert_eq!(rate_basis_points("0.035"), Some(350));
        assert_eq!(rate_basis_points("0.03339"), Some(333));
        assert_eq!(rate_basis_points(""), Some(0));
        assert_eq!(rate_basis_points("1.5"), None);
        assert_eq!(rate_basis_points("-0.1"), None);
        assert_eq!(rate_basis_points("abc"), None);
    }

    #[test]
    fn a_recorded_outcome_is_resolved_before_anything_new_is_asked() {
        // Proves the order of a claim's steps, and that the orphan sweep waits for the
        // reconciler.
        let pending = PendingSteps {
            reserve_intent: true,
            evaluation_due: true,
            ..PendingSteps::default()
        };
        assert_eq!(
            next_step(ClaimState::Submitted, pending, false),
            Some(ClaimStep::ResolveReserve)
        );
        let evaluation = PendingSteps {
            evaluation_due: true,
            ..PendingSteps::default()
        };
        assert_eq!(
            next_step(ClaimState::Waitlisted, evaluation, false),
            Some(ClaimStep::Evaluate)
        );
        assert_eq!(
            next_step(ClaimState::Submitted, PendingSteps::default(), false),
            Some(ClaimStep::Fund)
        );
        let orphans = PendingSteps {
            orphan_check_due: true,
            ..PendingSteps::default()
        };
        assert_eq!(next_step(ClaimState::Withdrawn, orphans, false), None);
        assert_eq!(
            next_step(ClaimState::NeedsInformation, PendingSteps::default(), true),
            None
        );
        assert_eq!(
            next_step(ClaimState::Withdrawn, orphans, true),
            Some(ClaimStep::SweepOrphans)
        );
        assert_eq!(
            next_step(ClaimState::PendingReview, PendingSteps::default(), true),
            None
        );
    }

    #[test]
    fn a_claim_is_numbered_before_it_is_evaluated_or_funded_whatever_its_state() {
        // Proves that no claim is funded without its place in the acceptance order, and that
        // a claim found ineligible at once is numbered too.
        let unnumbered = PendingSteps {
            unnumbered: true,
            ..PendingSteps::default()
        };
        for state in [ClaimState::Submitted, ClaimState::Ineligible] {
            assert_eq!(
                next_step(state, unnumbered, false),
                Some(ClaimStep::Number),
                "{state:?}"
            );
        }
        let evaluation = PendingSteps {
            evaluation_due: true,
            ..unnumbered
        };
        assert_eq!(
            next_step(ClaimState::Submitted, evaluation, false),
            Some(ClaimStep::Number)
        );
    }

    #[test]
    fn a_hold_is_extended_near_its_expiry_and_never_early() {
        // Proves the extension waits for the margin and for two thirds of the hold's lifetime,
        // and that a margin of 0 turns it off.
        let day = 86_400_000_000;
        // A 90-day hold, 7-day margin: not at day 80, yes at day 84.
        assert!(!hold_extension_due(Some(0), 90 * day, 80 * day, 7 * day));
        assert!(hold_extension_due(Some(0), 90 * day, 84 * day, 7 * day));
        // Past its expiry (the budget may not have expired it yet): still extended.
        assert!(hold_extension_due(Some(0), 90 * day, 91 * day, 7 * day));
        // A 1-hour hold under a 7-day margin: not before 40 minutes.
        let minute = 60_000_000;
        assert!(!hold_extension_due(
            Some(0),
            60 * minute,
            39 * minute,
            7 * day
        ));
        assert!(hold_extension_due(
            Some(0),
            60 * minute,
            40 * minute,
            7 * day
        ));
        assert!(!hold_extension_due(Some(0), 90 * day, 89 * day, 0));
    }
}
