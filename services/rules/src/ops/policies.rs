//! The policy versions: read from the catalog, published in one transaction each, and the
//! shipped 2025 versions published on start.

use std::cmp::Reverse;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use prost::Message;
use subsidy_common::{BoxError, RequestId};

use super::{Author, Key, claim_key, finish_key, select};
use crate::catalog::Catalog;
use crate::domain::policy::{CompiledPolicy, PolicyRecord, PolicySpec, PolicyVersion};
use crate::domain::{Program, shanghai_date};
use crate::error::RulesError;
use crate::storage::{self, Store};
use crate::{compiler, policy_file};

/// Who the seeded policies are published by.
pub const SEED_PUBLISHER: &str = "system:seed";

/// GetPolicy: the version `version` of `policy_id`, or the one in effect today.
pub async fn get(
    catalog: &Catalog,
    policy_id: &str,
    version: Option<PolicyVersion>,
    now: DateTime<Utc>,
) -> Result<Arc<CompiledPolicy>, RulesError> {
    let program = Program::from_policy_id(policy_id).ok_or_else(|| RulesError::PolicyNotFound {
        policy_id: policy_id.to_owned(),
        version: None,
    })?;
    let snapshot = catalog.current().await?;
    select(&snapshot, program, version, shanghai_date(now)).map_err(|e| match e {
        // Asking for a policy, not for an evaluation: a program without versions has none.
        RulesError::NoPolicyPublished { policy_id } => RulesError::PolicyNotFound {
            policy_id: policy_id.to_owned(),
            version: None,
        },
        other => other,
    })
}

/// ListPolicies: up to `limit` published versions (of `program`, when given) in the order
/// policy id, then newest first, after the version `after` (policy id and publish sequence).
pub async fn list(
    catalog: &Catalog,
    program: Option<Program>,
    after: Option<(&str, i64)>,
    limit: usize,
) -> Result<Vec<Arc<CompiledPolicy>>, RulesError> {
    let snapshot = catalog.current().await?;
    let key = |p: &CompiledPolicy| (p.record.policy_id(), Reverse(p.record.publish_sequence));
    let mut policies: Vec<Arc<CompiledPolicy>> = snapshot
        .policies
        .iter()
        .filter(|p| program.is_none_or(|program| p.program() == program))
        .filter(|p| after.is_none_or(|(id, sequence)| key(p) > (id, Reverse(sequence))))
        .cloned()
        .collect();
    policies.sort_by(|a, b| key(a).cmp(&key(b)));
    policies.truncate(limit);
    Ok(policies)
}

/// How PublishPolicy was asked to act.
#[derive(Clone, Copy, Debug)]
pub enum Publication<'a> {
    /// Validate the draft only; nothing is stored.
    ValidateOnly,
    /// Publish, idempotent by `request_id`.
    Publish {
        /// The request id.
        request_id: &'a RequestId,
        /// The fingerprint of the request.
        fingerprint: &'a str,
    },
}

/// PublishPolicy: compiles the draft `spec` (its fields at `policy.…`) and, unless only
/// validating, publishes it by `publisher`; answers with `respond` of the resulting record (a
/// replay answers with the stored response).
pub async fn publish<R: Message + Default>(
    store: &Store,
    spec: PolicySpec,
    author: &Author,
    publication: Publication<'_>,
    respond: impl FnOnce(&PolicyRecord) -> R,
) -> Result<R, RulesError> {
    let compiled = compiler::compile_draft("policy", spec)?;
    match publication {
        Publication::ValidateOnly => Ok(respond(&compiled.record)),
        Publication::Publish {
            request_id,
            fingerprint,
        } => {
            let key = Key {
                request_id,
                operation: "PublishPolicy",
                fingerprint,
                author,
            };
            store_version(store, &compiled, &author.actor, Some(key), respond).await
        }
    }
}

/// Stores the compiled `policy` as a new, immutable published version. With a key, a replay
/// returns the stored response and a reused key is refused; an existing version is refused
/// either way.
async fn store_version<R: Message + Default>(
    store: &Store,
    policy: &CompiledPolicy,
    publisher: &str,
    key: Option<Key<'_>>,
    respond: impl FnOnce(&PolicyRecord) -> R,
) -> Result<R, RulesError> {
    let mut tx = store.db().begin_write().await?;
    if let Some(key) = &key
        && let Some(replay) = claim_key(&mut tx, store, key).await?
    {
        return Ok(replay);
    }
    // Taking the state row first serialises publications, so the existence check below sees
    // any version a concurrent publication just committed.
    let (sequence, now_us) =
        storage::policies::next_publication(&mut tx, store.now_us_sql()).await?;
    let spec = &policy.record.spec;
    let (policy_id, version) = (spec.program().policy_id(), spec.version.to_string());
    if storage::policies::exists(&mut tx, policy_id, &version).await? {
        return Err(RulesError::PolicyVersionExists { policy_id, version });
    }
    let record = PolicyRecord::published(spec.clone(), sequence, now_us, publisher);
    storage::policies::insert(&mut tx, &record).await?;
    let response = respond(&record);
    if let Some(key) = &key {
        let target = format!("{policy_id}@{version}");
        finish_key(&mut tx, key, &response, &[target.as_str()], now_us).await?;
    }
    tx.commit().await?;
    Ok(response)
}

/// Publishes each shipped policy version that is not published yet. A published version is
/// never changed: when a shipped file differs from the published version of the same number,
/// the published one stays in force and a warning says so.
pub async fn seed_shipped(store: &Store) -> Result<(), BoxError> {
    for draft in policy_file::shipped() {
        let compiled = compiler::validate_draft("policy", &draft)
            .map_err(|e| format!("shipped policy {} is invalid: {e:?}", draft.version))?;
        let spec = &compiled.record.spec;
        let name = format!("{}@{}", spec.program(), spec.version);
        match store_version(store, &compiled, SEED_PUBLISHER, None, |_| ()).await {
            Ok(()) => tracing::info!(policy = %name, "published a shipped policy"),
            Err(RulesError::PolicyVersionExists { policy_id, version }) => {
                let stored =
                    storage::policies::content_sha256_of(store.pool(), policy_id, &version).await?;
                if stored.as_deref() != Some(compiled.record.content_sha256.as_str()) {
                    tracing::warn!(
                        policy = %name,
                        "the shipped policy differs from the published version of the same number; the published one stays in force"
                    );
                }
            }
            Err(other) => return Err(format!("seeding {name}: {other}").into()),
        }
    }
    Ok(())
}

/// How publicity periods are counted: the working-day calendar and the development override of
/// every policy's length.
#[derive(Clone, Debug)]
pub struct Publicity {
    /// The working-day calendar.
    pub calendar: crate::domain::calendar::Calendar,
    /// When set, the length used instead of each policy's.
    pub working_days_override: Option<u32>,
}

/// GetPublicityPeriod: the period of an award of `program` made at `start` under `version`
/// (or the version in effect on the Shanghai day of `start`), with the version and the length
/// used.
pub async fn publicity_period(
    catalog: &Catalog,
    publicity: &Publicity,
    program: Program,
    version: Option<PolicyVersion>,
    start: DateTime<Utc>,
) -> Result<
    (
        Arc<CompiledPolicy>,
        u32,
        crate::domain::calendar::PublicityPeriod,
    ),
    RulesError,
> {
    let snapshot = catalog.current().await?;
    let policy = select(&snapshot, program, version, shanghai_date(start))?;
    let working_days = publicity
        .working_days_override
        .unwrap_or_else(|| policy.record.spec.parameters.publicity_working_days());
    let period = publicity.calendar.publicity_period(start, working_days);
    Ok((policy, working_days, period))
}
