//! The ranking of a data-infrastructure selection round: pure and deterministic.
//!
//! Proposals are ranked by mean expert score, highest first, compared exactly as fractions (ties:
//! earlier submission, then proposal id). Requests are awarded in rank order while the pool
//! lasts; the first one the rest cannot cover is handled by the shortfall mode: `Partial` gives
//! it what is left and ends the round, `Skip` passes over it and tries the next ones. A request
//! above the per-project cap is never selected.

use std::cmp::Ordering;

use rust_decimal::Decimal;
use subsidy_common::Money;

use super::policy::ShortfallMode;

/// Most candidates in one round.
pub const CANDIDATES_MAX: usize = 1000;
/// Most expert scores of one candidate.
pub const SCORES_MAX: usize = 100;
/// The highest score.
pub const SCORE_MAX: u32 = 100;
/// Decimal places of a given mean score and of the displayed mean.
pub const MEAN_DECIMAL_PLACES: u32 = 4;
const MEAN_SCALE: i64 = 10_000;

/// A mean score kept as an exact fraction.
#[derive(Clone, Copy, Debug)]
pub struct Mean {
    numerator: i64,
    denominator: i64,
}

impl Mean {
    /// The mean of 1 to [`SCORES_MAX`] scores from 0 to [`SCORE_MAX`].
    pub fn of_scores(scores: &[u32]) -> Result<Self, String> {
        if scores.is_empty() || scores.len() > SCORES_MAX {
            return Err(format!("must have 1 to {SCORES_MAX} scores"));
        }
        if let Some(bad) = scores.iter().find(|s| **s > SCORE_MAX) {
            return Err(format!("score {bad} is above {SCORE_MAX}"));
        }
        Ok(Mean {
            numerator: scores.iter().map(|s| i64::from(*s)).sum(),
            denominator: scores.len() as i64,
        })
    }

    /// A mean given as a decimal from 0 to 100 with at most four decimal places.
    pub fn of_decimal(value: Decimal) -> Result<Self, String> {
        if value.is_sign_negative() || value > Decimal::from(SCORE_MAX) {
            return Err(format!("must be from 0 to {SCORE_MAX}"));
        }
        if value.normalize().scale() > MEAN_DECIMAL_PLACES {
            return Err(format!(
                "must have at most {MEAN_DECIMAL_PLACES} decimal places"
            ));
        }
        // At most four places: the scaled value is a whole number up to 1,000,000.
        let scaled = (value * Decimal::from(MEAN_SCALE)).trunc();
        Ok(Mean {
            numerator: i64::try_from(scaled).expect("at most 1,000,000"),
            denominator: MEAN_SCALE,
        })
    }

    /// The mean rounded down to four decimal places, as `87.3333`.
    pub fn display(self) -> String {
        let scaled = self.numerator * MEAN_SCALE / self.denominator;
        format!("{}.{:04}", scaled / MEAN_SCALE, scaled % MEAN_SCALE)
    }
}

impl PartialEq for Mean {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Mean {}

impl PartialOrd for Mean {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Mean {
    fn cmp(&self, other: &Self) -> Ordering {
        (i128::from(self.numerator) * i128::from(other.denominator))
            .cmp(&(i128::from(other.numerator) * i128::from(self.denominator)))
    }
}

/// One proposal of a round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Unique in the round.
    pub proposal_id: String,
    /// Positive.
    pub requested: Money,
    /// The mean expert score.
    pub mean: Mean,
    /// When it was submitted: seconds and nanoseconds since the epoch.
    pub submitted: (i64, i32),
}

/// The outcome of one proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Receives its full request.
    Awarded,
    /// Receives what was left, less than it asked.
    PartiallyAwarded,
    /// Receives nothing.
    NotSelected,
}

/// The stable reason of an outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AwardReason {
    /// Awarded in full.
    FullyFunded,
    /// Partially awarded with what was left.
    PoolShortfallPartial,
    /// Passed over: the request exceeded what was left and the policy skips.
    PoolShortfallSkipped,
    /// Nothing was left, or the round ended after a partial award.
    PoolExhausted,
    /// The request exceeds the per-project cap.
    RequestAboveProjectCap,
}

impl AwardReason {
    /// The stable code.
    pub fn code(self) -> &'static str {
        match self {
            AwardReason::FullyFunded => "FULLY_FUNDED",
            AwardReason::PoolShortfallPartial => "POOL_SHORTFALL_PARTIAL",
            AwardReason::PoolShortfallSkipped => "POOL_SHORTFALL_SKIPPED",
            AwardReason::PoolExhausted => "POOL_EXHAUSTED",
            AwardReason::RequestAboveProjectCap => "REQUEST_ABOVE_PROJECT_CAP",
        }
    }
}

/// One line of the award list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Award {
    /// From 1, without gaps.
    pub rank: u32,
    /// The proposal.
    pub proposal_id: String,
    /// The mean, rounded down to four places.
    pub mean_score: String,
    /// What it receives; zero when not selected.
    pub awarded: Money,
    /// The outcome.
    pub outcome: Outcome,
    /// Why.
    pub reason: AwardReason,
}

/// The result of a round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoundResult {
    /// Every candidate once, in rank order.
    pub awards: Vec<Award>,
    /// The sum awarded; at most the pool.
    pub total_awarded: Money,
    /// The pool minus the sum awarded.
    pub pool_remaining: Money,
}

/// Ranks `candidates` and awards them from `pool`. `shortfall` is `Partial` or `Skip` (a data-
/// infrastructure policy never holds `Waitlist`; it would be treated as `Partial`, the default).
pub fn rank(
    pool: Money,
    candidates: &[Candidate],
    project_cap: Money,
    shortfall: ShortfallMode,
) -> RoundResult {
    let mut order: Vec<&Candidate> = candidates.iter().collect();
    order.sort_by(|a, b| {
        b.mean
            .cmp(&a.mean)
            .then(a.submitted.cmp(&b.submitted))
            .then(a.proposal_id.cmp(&b.proposal_id))
    });
    let mut remaining = pool;
    let mut ended = false;
    let mut awards = Vec::with_capacity(order.len());
    for (i, candidate) in order.into_iter().enumerate() {
        let request = candidate.requested;
        let (awarded, outcome, reason) = if request > project_cap {
            (
                Money::ZERO,
                Outcome::NotSelected,
                AwardReason::RequestAboveProjectCap,
            )
        } else if ended || remaining.is_zero() {
            (
                Money::ZERO,
                Outcome::NotSelected,
                AwardReason::PoolExhausted,
            )
        } else if request <= remaining {
            (request, Outcome::Awarded, AwardReason::FullyFunded)
        } else if shortfall == ShortfallMode::Skip {
            (
                Money::ZERO,
                Outcome::NotSelected,
                AwardReason::PoolShortfallSkipped,
            )
        } else {
            ended = true;
            (
                remaining,
                Outcome::PartiallyAwarded,
                AwardReason::PoolShortfallPartial,
            )
        };
        remaining = remaining
            .checked_sub(awarded)
            .expect("an award never exceeds what is left");
        assert!(awarded <= request && awarded <= project_cap);
        awards.push(Award {
            rank: u32::try_from(i + 1).expect("at most CANDIDATES_MAX"),
            proposal_id: candidate.proposal_id.clone(),
            mean_score: candidate.mean.display(),
            awarded,
            outcome,
            reason,
        });
    }
    let total_awarded = pool.checked_sub(remaining).expect("remaining ≤ pool");
    RoundResult {
        awards,
        total_awarded,
        pool_remaining: remaining,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn yuan(n: i64) -> Money {
        Money::from_yuan(n).unwrap()
    }

    fn candidate(id: &str, requested: i64, scores: &[u32], second: i64) -> Candidate {
        Candidate {
            proposal_id: id.into(),
            requested: yuan(requested),
            mean: Mean::of_scores(scores).unwrap(),
            submitted: (second, 0),
        }
    }

    #[test]
    fn means_compare_exactly_and_display_rounded_down() {
        // Proves: 260/3 and 86.6666 are different means, and displays round down.
        let thirds = Mean::of_scores(&[86, 87, 87]).unwrap();
        let given = Mean::of_decimal(dec!(86.6666)).unwrap();
        assert!(thirds > given);
        assert_eq!(thirds.display(), "86.6666");
        assert_eq!(Mean::of_decimal(dec!(90)).unwrap().display(), "90.0000");
        assert_eq!(
            Mean::of_scores(&[90]).unwrap(),
            Mean::of_decimal(dec!(90.0)).unwrap()
        );
        assert!(Mean::of_decimal(dec!(100.5)).is_err());
        assert!(Mean::of_decimal(dec!(1.00001)).is_err());
        assert!(Mean::of_scores(&[]).is_err());
        assert!(Mean::of_scores(&[101]).is_err());
    }

    #[test]
    fn partial_mode_gives_the_first_uncovered_request_what_is_left_and_ends_the_round() {
        // Proves: the POLICY.md default — the shortfall gets the rest, later ones get nothing.
        let round = [
            candidate("a", 6_000_000, &[90], 1),
            candidate("b", 5_000_000, &[80], 2),
            candidate("c", 1_000_000, &[70], 3),
        ];
        let result = rank(
            yuan(10_000_000),
            &round,
            yuan(10_000_000),
            ShortfallMode::Partial,
        );
        let outcomes: Vec<_> = result
            .awards
            .iter()
            .map(|a| (a.proposal_id.as_str(), a.awarded, a.reason))
            .collect();
        assert_eq!(
            outcomes,
            [
                ("a", yuan(6_000_000), AwardReason::FullyFunded),
                ("b", yuan(4_000_000), AwardReason::PoolShortfallPartial),
                ("c", Money::ZERO, AwardReason::PoolExhausted),
            ]
        );
        assert_eq!(result.total_awarded, yuan(10_000_000));
        assert!(result.pool_remaining.is_zero());
    }

    #[test]
    fn skip_mode_passes_over_the_uncovered_request_and_funds_later_ones() {
        // Proves: with `skip` a smaller, lower-ranked request is still funded.
        let round = [
            candidate("a", 6_000_000, &[90], 1),
            candidate("b", 5_000_000, &[80], 2),
            candidate("c", 1_000_000, &[70], 3),
        ];
        let result = rank(
            yuan(10_000_000),
            &round,
            yuan(10_000_000),
            ShortfallMode::Skip,
        );
        let reasons: Vec<_> = result.awards.iter().map(|a| a.reason).collect();
        assert_eq!(
            reasons,
            [
                AwardReason::FullyFunded,
                AwardReason::PoolShortfallSkipped,
                AwardReason::FullyFunded
            ]
        );
        assert_eq!(result.total_awarded, yuan(7_000_000));
        assert_eq!(result.pool_remaining, yuan(3_000_000));
    }

    #[test]
    fn ties_go_to_the_earlier_submission_and_requests_above_the_cap_are_never_selected() {
        // Proves: equal means rank by submission time, then id; an oversized request gets nothing.
        let round = [
            candidate("late", 1_000_000, &[80, 90], 20),
            candidate("early", 1_000_000, &[85], 10),
            candidate("huge", 10_000_001, &[100], 1),
        ];
        let result = rank(
            yuan(40_000_000),
            &round,
            yuan(10_000_000),
            ShortfallMode::Partial,
        );
        let order: Vec<_> = result
            .awards
            .iter()
            .map(|a| (a.rank, a.proposal_id.as_str(), a.reason))
            .collect();
        assert_eq!(
            order,
            [
                (1, "huge", AwardReason::RequestAboveProjectCap),
                (2, "early", AwardReason::FullyFunded),
                (3, "late", AwardReason::FullyFunded),
            ]
        );
    }
}
