//! The evaluations: a claim or proposal under the policy in effect (or a named version), a
//! selection round ranked under the data-infrastructure policy, and a draft simulated next to a
//! published baseline. Each evaluation except the simulation (a what-if) is stored before it is
//! answered: the edge renders the record and the answer ([`Rendered`]) and the decision is
//! written by the decisions' writer, which groups concurrent evaluations into one INSERT; an
//! evaluation that cannot be stored is not answered.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use subsidy_common::{Money, Uscc};
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
use crate::domain::registry::{self, DataCenterStatus, ProviderStatus, RegistryAnswer};
use crate::domain::simulation::{self, Case, Lookups, Simulation, SimulationFailure, Subject};
use crate::domain::{Program, shanghai_date};
use crate::error::RulesError;
use crate::storage::decisions::{DecisionKind, DecisionRow};
use crate::storage::{self, Store};

/// A decision with the identifier and time it was made, and what made it.
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// The decision.
    pub decision: Decision,
    /// Its identifier, under which it is stored with its inputs.
    pub decision_id: Uuid,
    /// When it was made.
    pub evaluated_at: DateTime<Utc>,
    /// The policy version applied.
    pub policy: Arc<CompiledPolicy>,
    /// What the denylist said about the buyer (compute vouchers; false for proposals).
    pub buyer_on_denylist: bool,
    /// What the provider registry said, when the policy consulted it (compute vouchers).
    pub provider_registry: Option<RegistryAnswer>,
}

/// A ranked round with the identifier and time it was ranked, and the policy applied.
#[derive(Clone, Debug)]
pub struct Ranking {
    /// The awards.
    pub result: RoundResult,
    /// Its identifier, under which it is stored with its inputs.
    pub decision_id: Uuid,
    /// When it was ranked.
    pub evaluated_at: DateTime<Utc>,
    /// The data-infrastructure policy version applied.
    pub policy: Arc<CompiledPolicy>,
}

/// What the edge makes of an evaluation: the record to store (an encoded
/// `subsidy.rules.v1.StoredDecision`) and the answer.
#[derive(Clone, Debug)]
pub struct Rendered<R> {
    /// The record, encoded.
    pub record: Vec<u8>,
    /// The answer to the caller.
    pub response: R,
}

/// Logs a decision under its id (the record is the evidence; the log line is for operators).
fn log(evaluation: &Evaluation) {
    let decision = &evaluation.decision;
    let failed: Vec<&str> = decision
        .failed_checks
        .iter()
        .map(|c| c.reason.code())
        .collect();
    tracing::info!(
        decision_id = %evaluation.decision_id,
        policy_id = decision.policy_id,
        policy_version = %decision.policy_version,
        eligible = decision.eligible,
        entitlement = %decision.entitlement,
        failed_checks = ?failed,
        "decision"
    );
}

/// Stores what was rendered of decision `decision_id` about `subject` (through the decisions'
/// writer: concurrent evaluations share one INSERT and one commit) and hands back the answer.
async fn store<R>(
    catalog: &Catalog,
    (kind, policy, subject): (DecisionKind, &CompiledPolicy, &str),
    (decision_id, evaluated_at): (Uuid, DateTime<Utc>),
    rendered: Rendered<R>,
) -> Result<R, RulesError> {
    let row = DecisionRow {
        decision_id: decision_id.to_string(),
        kind,
        policy_id: policy.record.policy_id(),
        policy_version: policy.version(),
        subject_uscc: subject.to_owned(),
        evaluated_us: evaluated_at.timestamp_micros(),
        record: rendered.record,
    };
    catalog.decisions().submit(row).await?;
    Ok(rendered.response)
}

/// EvaluateComputeVoucher: `claim` under `version`, or under the version in effect on its
/// signing day; stored as `render` renders it, then answered.
pub async fn compute_voucher<R>(
    catalog: &Catalog,
    claim: &Claim,
    version: Option<PolicyVersion>,
    now: DateTime<Utc>,
    render: impl FnOnce(&Evaluation) -> Rendered<R>,
) -> Result<R, RulesError> {
    let snapshot = catalog.current().await?;
    let policy = select(
        &snapshot,
        Program::ComputeVoucher,
        version,
        claim.signing_date,
    )?;
    let buyer_on_denylist = snapshot.denylisted(&claim.buyer_uscc);
    let provider_registry = if compute_voucher::parameters(&policy).provider_registry_required {
        Some(registry_answer(catalog.store(), claim).await?)
    } else {
        None
    };
    let decision = compute_voucher::evaluate_with_registry(
        &policy,
        claim,
        buyer_on_denylist,
        provider_registry,
        true,
    )
    .map_err(|failure| evaluation_failed(&policy, failure))?;
    let evaluation = Evaluation {
        decision,
        decision_id: Uuid::now_v7(),
        evaluated_at: now,
        policy,
        buyer_on_denylist,
        provider_registry,
    };
    log(&evaluation);
    let rendered = render(&evaluation);
    let subject = (
        DecisionKind::ComputeVoucher,
        &*evaluation.policy,
        claim.buyer_uscc.as_str(),
    );
    let made = (evaluation.decision_id, now);
    store(catalog, subject, made, rendered).await
}

/// What the registry says about `claim`'s seller on its signing date and its data center.
pub async fn registry_answer(store: &Store, claim: &Claim) -> Result<RegistryAnswer, RulesError> {
    let Ok(seller) = Uscc::parse(&claim.seller_uscc) else {
        return Ok(RegistryAnswer::default());
    };
    let Some(provider) = storage::registry::get(store.pool(), &seller).await? else {
        return Ok(RegistryAnswer::default());
    };
    let changes = storage::registry::changes(store.pool(), &seller).await?;
    let seller_admitted =
        registry::status_on(&changes, claim.signing_date) == Some(ProviderStatus::Admitted);
    let data_center_registered = provider.data_centers.iter().any(|center| {
        center.status == DataCenterStatus::InService
            && center.division_code.in_shandong()
            && center.division_code.as_str() == claim.data_center_division_code
    });
    Ok(RegistryAnswer {
        seller_admitted,
        data_center_registered,
    })
}

/// The registry's answers about the claims of `cases` (two reads per claim, at most
/// `simulation::CASES_MAX` claims).
async fn registry_answers(
    store: &Store,
    cases: &[Case],
) -> Result<Vec<(Claim, RegistryAnswer)>, RulesError> {
    let mut answers = Vec::new();
    for case in cases {
        if let Subject::ComputeVoucher(claim) = &case.subject {
            answers.push((claim.clone(), registry_answer(store, claim).await?));
        }
    }
    Ok(answers)
}

/// EvaluateDataInfraProposal: `proposal` under `version`, or under the version in effect
/// today; stored as `render` renders it, then answered.
pub async fn data_infra<R>(
    catalog: &Catalog,
    proposal: &Proposal,
    version: Option<PolicyVersion>,
    now: DateTime<Utc>,
    render: impl FnOnce(&Evaluation) -> Rendered<R>,
) -> Result<R, RulesError> {
    let snapshot = catalog.current().await?;
    let policy = select(&snapshot, Program::DataInfra, version, shanghai_date(now))?;
    let decision = data_infra::evaluate(&policy, proposal, true)
        .map_err(|failure| evaluation_failed(&policy, failure))?;
    let evaluation = Evaluation {
        decision,
        decision_id: Uuid::now_v7(),
        evaluated_at: now,
        policy,
        buyer_on_denylist: false,
        provider_registry: None,
    };
    log(&evaluation);
    let rendered = render(&evaluation);
    let subject = (
        DecisionKind::DataInfra,
        &*evaluation.policy,
        proposal.applicant_uscc.as_str(),
    );
    let made = (evaluation.decision_id, now);
    store(catalog, subject, made, rendered).await
}

/// The awards of `candidates` from `pool` under the data-infrastructure `policy`. Pure.
pub fn rank(policy: &CompiledPolicy, pool: Money, candidates: &[Candidate]) -> RoundResult {
    let parameters = data_infra::parameters(policy);
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
    result
}

/// RankSelectionRound: `candidates` ranked and awarded from `pool` under the data-infrastructure
/// policy `version`, or the one in effect today; stored as `render` renders it, then answered.
pub async fn rank_selection_round<R>(
    catalog: &Catalog,
    pool: Money,
    candidates: &[Candidate],
    version: Option<PolicyVersion>,
    now: DateTime<Utc>,
    render: impl FnOnce(&Ranking) -> Rendered<R>,
) -> Result<R, RulesError> {
    let snapshot = catalog.current().await?;
    let policy = select(&snapshot, Program::DataInfra, version, shanghai_date(now))?;
    let ranking = Ranking {
        result: rank(&policy, pool, candidates),
        decision_id: Uuid::now_v7(),
        evaluated_at: now,
        policy,
    };
    tracing::info!(
        decision_id = %ranking.decision_id,
        policy_version = %ranking.policy.version(),
        total_awarded = %ranking.result.total_awarded,
        "ranking"
    );
    let rendered = render(&ranking);
    let subject = (DecisionKind::SelectionRound, &*ranking.policy, "");
    store(catalog, subject, (ranking.decision_id, now), rendered).await
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
    let consulted = |policy: &CompiledPolicy| {
        program == Program::ComputeVoucher
            && compute_voucher::parameters(policy).provider_registry_required
    };
    let answers = if consulted(&draft) || consulted(&baseline) {
        registry_answers(catalog.store(), cases).await?
    } else {
        Vec::new()
    };
    let registry = |claim: &Claim| {
        answers
            .iter()
            .find(|(asked, _)| asked == claim)
            .map(|(_, answer)| *answer)
            .unwrap_or_default()
    };
    let lookups = Lookups {
        denylisted: &denylisted,
        registry: &registry,
    };
    let simulation = simulation::simulate_with(&draft, &baseline, cases, &lookups, include_trace)
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
