//! The explained outcome of one evaluation, as the domain computes it. The decision id and the
//! evaluation time are added at the edge, so that the same inputs give the same decision.

use rust_decimal::Decimal;
use subsidy_common::Money;

use super::Program;
use super::graph::TraceStep;
use super::reasons::FailedCheck;

/// The outcome of evaluating a claim or proposal under one policy version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The program evaluated.
    pub program: Program,
    /// True when no check failed.
    pub eligible: bool,
    /// Every failed check, in the order the policy runs them.
    pub failed_checks: Vec<FailedCheck>,
    /// The rate applied (compute vouchers).
    pub rate_applied: Option<Decimal>,
    /// What the claim or proposal is entitled to; zero when not eligible.
    pub entitlement: Money,
    /// The enterprise cap minus usage, never negative (compute vouchers).
    pub enterprise_cap_remaining: Option<Money>,
    /// Whether the enterprise cap limited the entitlement.
    pub enterprise_cap_reached: bool,
    /// The rules evaluated, in order; empty when the trace was not asked for.
    pub trace: Vec<TraceStep>,
    /// The policy id.
    pub policy_id: &'static str,
    /// The exact policy version.
    pub policy_version: String,
}
