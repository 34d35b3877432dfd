//! The stored decisions: reading one (an applicant only its own enterprises'), and replaying
//! one: its stored inputs evaluated again under its stored policy version, with the denylist
//! answer stored with it, so that the edge can compare the result with the stored one. The
//! edge decodes the stored record into the domain inputs (`wire`); nothing here is written.

use std::sync::Arc;

use subsidy_common::auth::Tenant;
use uuid::Uuid;

use super::evaluate::rank;
use crate::catalog::Catalog;
use crate::domain::compute_voucher;
use crate::domain::data_infra;
use crate::domain::policy::{self, CompiledPolicy, PolicyVersion};
use crate::domain::replay::{Inputs, Replayed};
use crate::error::RulesError;
use crate::storage::{Store, decisions};

/// GetDecision: the encoded record of decision `decision_id`, if `tenant` may see its subject;
/// otherwise, as for an unknown id, `DecisionNotFound`.
pub async fn get(store: &Store, decision_id: Uuid, tenant: &Tenant) -> Result<Vec<u8>, RulesError> {
    let not_found = || RulesError::DecisionNotFound {
        decision_id: decision_id.to_string(),
    };
    let (subject, record) = decisions::get(store.pool(), &decision_id.to_string())
        .await?
        .ok_or_else(not_found)?;
    // A ranking's subject is empty: no applicant's enterprise.
    if !tenant.sees(&subject) {
        return Err(not_found());
    }
    Ok(record)
}

/// ReplayDecision: `inputs` evaluated again under version `version` of the policy `policy_id`
/// (a published, hence unchanged, version); the result and the policy version used.
pub async fn replay(
    catalog: &Catalog,
    policy_id: &str,
    version: PolicyVersion,
    inputs: &Inputs,
) -> Result<(Replayed, Arc<CompiledPolicy>), RulesError> {
    let not_found = || RulesError::PolicyNotFound {
        policy_id: policy_id.to_owned(),
        version: Some(version.to_string()),
    };
    let program = crate::domain::Program::from_policy_id(policy_id).ok_or_else(not_found)?;
    let snapshot = catalog.current().await?;
    let policy = policy::find(&snapshot.policies, program, version).ok_or_else(not_found)?;
    if policy.program() != inputs_program(inputs) {
        return Err(not_found());
    }
    let evaluated = match inputs {
        Inputs::ComputeVoucher {
            claim,
            buyer_on_denylist,
            provider_registry,
        } => compute_voucher::evaluate_with_registry(
            &policy,
            claim,
            *buyer_on_denylist,
            *provider_registry,
            true,
        )
        .map(Replayed::Decision),
        Inputs::DataInfra(proposal) => {
            data_infra::evaluate(&policy, proposal, true).map(Replayed::Decision)
        }
        Inputs::SelectionRound { pool, candidates } => {
            Ok(Replayed::Ranking(rank(&policy, *pool, candidates)))
        }
    };
    Ok((evaluated.unwrap_or_else(Replayed::EngineFailed), policy))
}

/// The program whose policy evaluates `inputs`.
fn inputs_program(inputs: &Inputs) -> crate::domain::Program {
    match inputs {
        Inputs::ComputeVoucher { .. } => crate::domain::Program::ComputeVoucher,
        Inputs::DataInfra(_) | Inputs::SelectionRound { .. } => crate::domain::Program::DataInfra,
    }
}
