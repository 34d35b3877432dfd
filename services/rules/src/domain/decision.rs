//! The explained outcome of one evaluation, as the domain computes it. The decision id and the
//! evaluation time are added at the edge, so that the same inputs give the same decision.

use rust_decimal::Decimal;
use serde_json::Value;
use subsidy_common::Money;

use super::Program;
use super::graph::TraceStep;
use super::reasons::{CheckOutcome, FailedCheck, Reason};

/// The outcome of evaluating a claim or proposal under one policy version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The program evaluated.
    pub program: Program,
    /// True when no check failed.
    pub eligible: bool,
    /// Every failed check, in the order the policy runs them.
    pub failed_checks: Vec<FailedCheck>,
    /// Every check run, passed or failed, in the order the policy runs them.
    pub checks: Vec<CheckOutcome>,
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

/// What an evaluation has found so far: its failed checks, every check run with its outcome
/// and, when a trace was asked for, the rules evaluated, all in the order the checks run.
#[derive(Debug)]
pub struct Findings {
    /// The failed checks.
    pub failed: Vec<FailedCheck>,
    /// Every check run so far, passed or failed.
    pub checks: Vec<CheckOutcome>,
    /// The trace; stays empty without `trace`.
    pub steps: Vec<TraceStep>,
    trace: bool,
}

impl Findings {
    /// Nothing found yet; `trace` says whether to record the rules evaluated.
    pub fn new(trace: bool) -> Self {
        Findings {
            failed: Vec::new(),
            checks: Vec::new(),
            steps: Vec::new(),
            trace,
        }
    }

    /// Records a failed check.
    pub fn fail(&mut self, check: FailedCheck) {
        self.checks.push(CheckOutcome::failed(&check));
        self.failed.push(check);
    }

    /// Records a passed check of `reason` on `field` with what passing means (`zh`, `en`).
    pub fn pass(&mut self, reason: Reason, field: &'static str, (zh, en): (&str, &str)) {
        self.checks
            .push(CheckOutcome::passed(reason, field, zh, en));
    }

    /// Records a typed check applied after the engine; `summaries` (its input and output) are
    /// only built when tracing.
    pub fn typed(
        &mut self,
        id: &str,
        name: &str,
        summaries: impl FnOnce() -> (Value, Value),
        passed: bool,
    ) {
        if self.trace {
            let (input, output) = summaries();
            self.steps
                .push(TraceStep::typed(id, name, input, output, passed));
        }
    }

    /// Whether no check failed so far.
    pub fn eligible(&self) -> bool {
        self.failed.is_empty()
    }
}
