//! The use cases of the rules service, one function per call; the edge parses, calls one of
//! them, and renders what it returns.
//!
//! Evaluations ([`evaluate`]) work on the catalog's current snapshot (the policies and
//! denylist in effect, refreshed when another replica changed them) and store each decision
//! with one INSERT before answering; [`decisions`] reads and replays the stored ones. The
//! two writes, a publication and a denylist replacement, each run in one write transaction:
//! claim the idempotency key, take the `rules_state` row (which serialises writers and numbers
//! them), decide, write through storage, and store the replayable response the edge's
//! `respond` closure builds, so that a replay returns it byte for byte. The clock is read by
//! the edge and handed in as `now`.

pub mod decisions;
pub mod denylist;
pub mod evaluate;
pub mod policies;
pub mod registry;

use std::sync::Arc;

use chrono::NaiveDate;
use subsidy_common::RequestId;
use subsidy_common::audit::{AuditRecord, Changer};
use subsidy_common::idempotency::{self, Claim};

use crate::catalog::Snapshot;
use crate::domain::Program;
use crate::domain::graph::EngineFailure;
use crate::domain::policy::{self, CompiledPolicy, PolicyVersion};
use crate::error::RulesError;
use crate::storage::{Store, Tx};

/// The version of `program` to use: `version` when given, otherwise the one in effect on `day`.
pub fn select(
    snapshot: &Snapshot,
    program: Program,
    version: Option<PolicyVersion>,
    day: NaiveDate,
) -> Result<Arc<CompiledPolicy>, RulesError> {
    match version {
        Some(version) => policy::find(&snapshot.policies, program, version).ok_or_else(|| {
            RulesError::PolicyNotFound {
                policy_id: program.policy_id().to_owned(),
                version: Some(version.to_string()),
            }
        }),
        None => policy::in_effect(&snapshot.policies, program, day).ok_or(
            RulesError::NoPolicyPublished {
                policy_id: program.policy_id(),
            },
        ),
    }
}

/// The engine failed on `policy`, a published version.
fn evaluation_failed(policy: &CompiledPolicy, failure: EngineFailure) -> RulesError {
    RulesError::PolicyEvaluationFailed {
        policy_id: policy.record.policy_id(),
        version: policy.version(),
        failure,
    }
}

/// Who makes a write: the authenticated caller as records name it, the scope its request ids
/// live in, and the audit record of the call.
#[derive(Clone, Debug)]
pub struct Author {
    /// The caller as publications and the audit trail name it.
    pub actor: String,
    /// The idempotency scope (the authenticated principal).
    pub scope: String,
    /// The audit record of the call.
    pub audit: Option<AuditRecord>,
}

impl From<Changer> for Author {
    /// The authenticated caller of a write request.
    fn from(changer: Changer) -> Author {
        Author {
            actor: changer.actor,
            scope: changer.scope,
            audit: Some(changer.audit),
        }
    }
}

/// The idempotency key of a write: the request id, the operation and the request's fingerprint,
/// in the author's scope.
#[derive(Clone, Copy, Debug)]
struct Key<'a> {
    request_id: &'a RequestId,
    operation: &'static str,
    fingerprint: &'a str,
    author: &'a Author,
}

impl Key<'_> {
    /// The key as stored.
    fn stored(&self) -> String {
        idempotency::scoped(&self.author.scope, self.request_id.as_str())
    }
}

/// Stores the response of a fresh write under `key` and its audit record naming `targets`,
/// in the write's transaction.
async fn finish_key<R: prost::Message>(
    tx: &mut Tx,
    key: &Key<'_>,
    response: &R,
    targets: &[&str],
    now_us: i64,
) -> Result<(), RulesError> {
    idempotency::store_response(tx, &key.stored(), response).await?;
    if let Some(record) = &key.author.audit {
        subsidy_common::audit::append(tx, &[record.with_targets(targets)], now_us).await?;
    }
    Ok(())
}

/// Claims `key` in `tx`: `Some` stored response for a replay, `None` for a fresh request (do
/// the work and store the response before committing), an error for a key reused with another
/// request.
async fn claim_key<R: prost::Message + Default>(
    tx: &mut Tx,
    store: &Store,
    key: &Key<'_>,
) -> Result<Option<R>, RulesError> {
    let claimed = idempotency::claim::<R>(
        tx,
        &key.stored(),
        key.operation,
        key.fingerprint,
        store.now_us_sql(),
    )
    .await?;
    match claimed {
        Claim::Fresh => Ok(None),
        Claim::Replay(response) => Ok(Some(response)),
        Claim::Reused => Err(RulesError::RequestIdReused {
            request_id: key.request_id.as_str().to_owned(),
        }),
    }
}
