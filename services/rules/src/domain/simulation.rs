//! Simulation: a draft policy and a published one evaluated over the same past cases, with the
//! totals of each, so that a policy officer sees the effect of a change before publishing it.

use subsidy_common::Money;

use super::compute_voucher::Claim;
use super::data_infra::Proposal;
use super::decision::Decision;
use super::graph::EngineFailure;
use super::policy::CompiledPolicy;
use super::registry::RegistryAnswer;
use super::{Program, compute_voucher, data_infra};

/// Most cases of one simulation.
pub const CASES_MAX: usize = 1000;

/// The facts of a past case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// A compute-voucher claim.
    ComputeVoucher(Claim),
    /// A data-infrastructure proposal.
    DataInfra(Proposal),
}

impl Subject {
    /// The program the case belongs to.
    pub fn program(&self) -> Program {
        match self {
            Subject::ComputeVoucher(_) => Program::ComputeVoucher,
            Subject::DataInfra(_) => Program::DataInfra,
        }
    }
}

/// One past case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// Unique in the simulation.
    pub case_id: String,
    /// The facts; of the draft's program.
    pub subject: Subject,
}

/// A case's outcomes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseResult {
    /// The case.
    pub case_id: String,
    /// Under the draft.
    pub draft: Decision,
    /// Under the baseline.
    pub baseline: Decision,
    /// Whether eligibility or entitlement differ.
    pub changed: bool,
}

/// Totals under one policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Totals {
    /// Cases evaluated.
    pub case_count: i64,
    /// Eligible cases.
    pub eligible_count: i64,
    /// Sum of the entitlements.
    pub total_subsidy: Money,
    /// Cases whose entitlement the enterprise cap limited.
    pub enterprise_cap_reached_count: i64,
}

impl Default for Totals {
    /// No cases. (`Money::default()` is a zero of scale 0, so the sum starts at `Money::ZERO`.)
    fn default() -> Self {
        Totals {
            case_count: 0,
            eligible_count: 0,
            total_subsidy: Money::ZERO,
            enterprise_cap_reached_count: 0,
        }
    }
}

impl Totals {
    fn add(&mut self, decision: &Decision) {
        self.case_count += 1;
        if decision.eligible {
            self.eligible_count += 1;
        }
        if decision.enterprise_cap_reached {
            self.enterprise_cap_reached_count += 1;
        }
        self.total_subsidy = self
            .total_subsidy
            .checked_add(decision.entitlement)
            .expect("1000 entitlements stay far below Money::MAX");
    }
}

/// The result of a simulation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Simulation {
    /// Per case, in input order.
    pub results: Vec<CaseResult>,
    /// Totals under the draft.
    pub draft_totals: Totals,
    /// Totals under the baseline.
    pub baseline_totals: Totals,
}

/// Which policy of a simulation the engine failed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimulationFailure {
    /// The draft, on the case with this id.
    Draft(String, EngineFailure),
    /// The published baseline.
    Baseline(EngineFailure),
}

/// What an evaluation looks up outside the claim: whether a code is on the denylist, and what
/// the provider registry says about a claim (asked only under a policy that requires it).
pub struct Lookups<'a> {
    /// Whether a code is on the denylist.
    pub denylisted: &'a dyn Fn(&str) -> bool,
    /// The registry's answer about a claim's seller and data center.
    pub registry: &'a dyn Fn(&Claim) -> RegistryAnswer,
}

/// Evaluates `subject` under `policy`; `denylisted` says whether a code is on the denylist
/// (and the registry, if the policy requires it, admits nothing).
pub fn evaluate_subject(
    policy: &CompiledPolicy,
    subject: &Subject,
    denylisted: &dyn Fn(&str) -> bool,
    trace: bool,
) -> Result<Decision, EngineFailure> {
    let lookups = Lookups {
        denylisted,
        registry: &|_| RegistryAnswer::default(),
    };
    evaluate_subject_with(policy, subject, &lookups, trace)
}

/// Evaluates `subject` under `policy` with what `lookups` say.
pub fn evaluate_subject_with(
    policy: &CompiledPolicy,
    subject: &Subject,
    lookups: &Lookups<'_>,
    trace: bool,
) -> Result<Decision, EngineFailure> {
    match subject {
        Subject::ComputeVoucher(claim) => {
            let registry = compute_voucher::parameters(policy)
                .provider_registry_required
                .then(|| (lookups.registry)(claim));
            compute_voucher::evaluate_with_registry(
                policy,
                claim,
                (lookups.denylisted)(&claim.buyer_uscc),
                registry,
                trace,
            )
        }
        Subject::DataInfra(proposal) => data_infra::evaluate(policy, proposal, trace),
    }
}

/// Evaluates every case under `draft` and `baseline` (both of the cases' program); the
/// registry, if a policy requires it, admits nothing (see [`simulate_with`]).
pub fn simulate(
    draft: &CompiledPolicy,
    baseline: &CompiledPolicy,
    cases: &[Case],
    denylisted: &dyn Fn(&str) -> bool,
    trace: bool,
) -> Result<Simulation, SimulationFailure> {
    let lookups = Lookups {
        denylisted,
        registry: &|_| RegistryAnswer::default(),
    };
    simulate_with(draft, baseline, cases, &lookups, trace)
}

/// Evaluates every case under `draft` and `baseline` with what `lookups` say.
pub fn simulate_with(
    draft: &CompiledPolicy,
    baseline: &CompiledPolicy,
    cases: &[Case],
    lookups: &Lookups<'_>,
    trace: bool,
) -> Result<Simulation, SimulationFailure> {
    let mut simulation = Simulation {
        results: Vec::with_capacity(cases.len()),
        draft_totals: Totals::default(),
        baseline_totals: Totals::default(),
    };
    for case in cases {
        let draft_decision = evaluate_subject_with(draft, &case.subject, lookups, trace)
            .map_err(|e| SimulationFailure::Draft(case.case_id.clone(), e))?;
        let baseline_decision = evaluate_subject_with(baseline, &case.subject, lookups, trace)
            .map_err(SimulationFailure::Baseline)?;
        simulation.draft_totals.add(&draft_decision);
        simulation.baseline_totals.add(&baseline_decision);
        let changed = draft_decision.eligible != baseline_decision.eligible
            || draft_decision.entitlement != baseline_decision.entitlement;
        simulation.results.push(CaseResult {
            case_id: case.case_id.clone(),
            draft: draft_decision,
            baseline: baseline_decision,
            changed,
        });
    }
    Ok(simulation)
}
