//! The evaluations: a claim or proposal under the policy in effect (or a named version), a
//! selection round ranked under the data-infrastructure policy, and a draft simulated next to a
//! published baseline. Nothing is written; each decision is logged under its id.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use subsidy_common::Money;
use subsidy_proto::status::FieldViolation;
use uuid::Uuid;

use super::{evaluation_failed, select};
use crate::catalog::Catalog;
use crate::compiler;
use crate::domain::compute_voucher::{self, Claim};
use crate::domain::data_infra::{self, Proposal};
use crate::domain::decision::Decision;
use crate::domain::policy::{CompiledPolicy, PolicySpec, PolicyVersion};
use crate::domain::ranking::{self, Candidate, RoundResult};
use crate::domain::simulation::{self, Case, Simulation, SimulationFailure};
use crate::domain::{Program, shanghai_date};
use crate::error::RulesError;

/// A decision with the identifier and time it was made.
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// The decision.
    pub decision: Decision,
    /// Its identifier, under which it is logged with its inputs.
    pub decision_id: Uuid,
    /// When it was made.
    pub evaluated_at: DateTime<Utc>,
}

/// Gives a decision its identifier and logs it with its inputs under that identifier.
fn record(decision: Decision, inputs: &dyn std::fmt::Debug, now: DateTime<Utc>) -> Evaluation {
    let decision_id = Uuid::now_v7();
    let failed: Vec<&str> = decision
        .failed_checks
        .iter()
        .map(|c| c.reason.code())
        .collect();
    tracing::info!(
        decision_id = %decision_id,
        policy_id = decision.policy_id,
        policy_version = %decision.policy_version,
        eligible = decision.eligible,
        entitlement = %decision.entitlement,
        failed_checks = ?failed,
        inputs = ?inputs,
        "decision"
    );
    Evaluation {
        decision,
        decision_id,
        evaluated_at: now,
    }
}

/// EvaluateComputeVoucher: `claim` under `version`, or under the version in effect on its
/// signing day.
pub async fn compute_voucher(
    catalog: &Catalog,
    claim: &Claim,
    version: Option<PolicyVersion>,
    now: DateTime<Utc>,
) -> Result<Evaluation, RulesError> {
    let snapshot = catalog.current().await?;
    let policy = select(
        &snapshot,
        Program::ComputeVoucher,
        version,
        claim.signing_date,
    )?;
    let denylisted = snapshot.denylisted(&claim.buyer_uscc);
    let decision = compute_voucher::evaluate(&policy, claim, denylisted, true)
        .map_err(|failure| evaluation_failed(&policy, failure))?;
    Ok(record(decision, claim, now))
}

/// EvaluateDataInfraProposal: `proposal` under `version`, or under the version in effect today.
pub async fn data_infra(
    catalog: &Catalog,
    proposal: &Proposal,
    version: Option<PolicyVersion>,
    now: DateTime<Utc>,
) -> Result<Evaluation, RulesError> {
    let snapshot = catalog.current().await?;
    let policy = select(&snapshot, Program::DataInfra, version, shanghai_date(now))?;
    let decision = data_infra::evaluate(&policy, proposal, true)
        .map_err(|failure| evaluation_failed(&policy, failure))?;
    Ok(record(decision, proposal, now))
}

/// RankSelectionRound: `candidates` ranked and awarded from `pool` under the data-infrastructure
/// policy `version`, or the one in effect today; returns the round and the policy used.
pub async fn rank_selection_round(
    catalog: &Catalog,
    pool: Money,
    candidates: &[Candidate],
    version: Option<PolicyVersion>,
    now: DateTime<Utc>,
) -> Result<(RoundResult, Arc<CompiledPolicy>), RulesError> {
    let snapshot = catalog.current().await?;
    let policy = select(&snapshot, Program::DataInfra, version, shanghai_date(now))?;
    let parameters = data_infra::parameters(&policy);
    let result = ranking::rank(
        pool,
        candidates,
        parameters.project_cap,
        parameters.shortfall,
    );
    assert!(
        result.total_awarded <= pool,
        "a round never awards more than the pool"
    );
    Ok((result, policy))
}

/// What a simulation compared.
#[derive(Debug)]
pub struct Simulated {
    /// The draft, compiled.
    pub draft: CompiledPolicy,
    /// The published baseline.
    pub baseline: Arc<CompiledPolicy>,
    /// Per case and in total.
    pub simulation: Simulation,
}

/// SimulatePolicy: the draft `spec` (its fields at `draft.…`) and the baseline `version`, or
/// the version of its program in effect today, over `cases`. Nothing is stored.
pub async fn simulate(
    catalog: &Catalog,
    spec: PolicySpec,
    cases: &[Case],
    baseline_version: Option<PolicyVersion>,
    include_trace: bool,
    now: DateTime<Utc>,
) -> Result<Simulated, RulesError> {
    let program = spec.program();
    let draft = compiler::compile_draft("draft", spec)?;
    let snapshot = catalog.current().await?;
    let baseline = select(&snapshot, program, baseline_version, shanghai_date(now))?;
    let denylisted = |code: &str| snapshot.denylisted(code);
    let simulation = simulation::simulate(&draft, &baseline, cases, &denylisted, include_trace)
        .map_err(|failure| match failure {
            SimulationFailure::Draft(case_id, failure) => RulesError::PolicyInvalid {
                policy_id: draft.record.policy_id(),
                version: draft.version(),
                violations: vec![FieldViolation::new(
                    "draft.document_json",
                    format!("the engine failed on case {case_id:?}: {failure}"),
                )],
            },
            SimulationFailure::Baseline(failure) => evaluation_failed(&baseline, failure),
        })?;
    Ok(Simulated {
        draft,
        baseline,
        simulation,
    })
}
