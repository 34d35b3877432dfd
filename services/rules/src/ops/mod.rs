//! The use cases of the rules service, one function per call; the edge parses, calls one of
//! them, and renders what it returns.
//!
//! Reads ([`evaluate`], and the listings of [`policies`] and [`denylist`]) work on the
//! catalog's current snapshot: the policies and denylist in effect, refreshed when another
//! replica changed them. The two writes, a publication and a denylist replacement, each run in
//! one write transaction: claim the idempotency key, take the `rules_state` row (which
//! serialises writers and numbers them), decide, write through storage, and store the
//! replayable response the edge's `respond` closure builds, so that a replay returns it
//! byte for byte. The clock is read by the edge and handed in as `now`.

pub mod denylist;
pub mod evaluate;
pub mod policies;

use std::sync::Arc;

use chrono::NaiveDate;
use sqlx::{Any, Transaction};
use subsidy_common::RequestId;
use subsidy_common::idempotency::{self, Claim};

use crate::catalog::Snapshot;
use crate::domain::Program;
use crate::domain::graph::EngineFailure;
use crate::domain::policy::{self, CompiledPolicy, PolicyVersion};
use crate::error::RulesError;
use crate::storage::Store;

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

/// The idempotency key of a write: the request id, the operation and the request's fingerprint.
#[derive(Clone, Copy, Debug)]
struct Key<'a> {
    request_id: &'a RequestId,
    operation: &'static str,
    fingerprint: &'a str,
}

/// Claims `key` in `tx`: `Some` stored response for a replay, `None` for a fresh request (do
/// the work and store the response before committing), an error for a key reused with another
/// request.
async fn claim_key<R: prost::Message + Default>(
    tx: &mut Transaction<'static, Any>,
    store: &Store,
    key: &Key<'_>,
) -> Result<Option<R>, RulesError> {
    let claimed = idempotency::claim::<R>(
        tx,
        key.request_id,
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
