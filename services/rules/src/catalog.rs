//! The policies and denylist in effect, compiled and held in memory, and refreshed from the
//! database whenever its generation counters moved: a publication or replacement made through any
//! replica is seen by every evaluation that starts after it returned, at the cost of one
//! single-row read per evaluation.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use crate::compiler;
use crate::domain::graph::EngineFailure;
use crate::domain::policy::{CompiledPolicy, PolicyRecord};
use crate::error::RulesError;
use crate::storage::decisions::{self, DecisionLog};
use crate::storage::{self, Generations, Store};

/// A consistent view of the published policies and the denylist.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The policy generation the view includes.
    pub policy_generation: i64,
    /// The denylist generation the view includes.
    pub denylist_generation: i64,
    /// Every published version, in publication order.
    pub policies: Vec<Arc<CompiledPolicy>>,
    /// The listed codes.
    pub denylist: Arc<HashSet<String>>,
}

impl Snapshot {
    /// Whether `uscc` (as given: trimmed and upper-cased) is on the denylist.
    pub fn denylisted(&self, uscc: &str) -> bool {
        self.denylist.contains(uscc)
    }
}

/// The in-memory catalog over a store.
#[derive(Debug)]
pub struct Catalog {
    store: Store,
    decisions: DecisionLog,
    snapshot: RwLock<Arc<Snapshot>>,
    reload: tokio::sync::Mutex<()>,
}

/// Compiles a stored version; one that no longer compiles is a fault of the deployment.
pub fn compile_stored(record: PolicyRecord) -> Result<CompiledPolicy, RulesError> {
    let policy_id = record.policy_id();
    let version = record.spec.version.to_string();
    compiler::compile(record).map_err(|problem| RulesError::PolicyEvaluationFailed {
        failure: EngineFailure::Engine(format!(
            "stored policy {policy_id}@{version} does not compile: {problem:?}"
        )),
        policy_id,
        version,
    })
}

impl Catalog {
    /// A catalog over `store`, loaded, with the writer of its decisions started.
    pub async fn open(store: Store) -> Result<Self, RulesError> {
        let catalog = Catalog {
            decisions: decisions::spawn_log(store.pool().clone()),
            store,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            reload: tokio::sync::Mutex::new(()),
        };
        catalog.current().await?;
        Ok(catalog)
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The writer of the evaluations' decisions (group commit).
    pub fn decisions(&self) -> &DecisionLog {
        &self.decisions
    }

    fn cached(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .expect("no thread panics holding the snapshot lock")
            .clone()
    }

    /// The current view: the cached one when the database's generations have not moved,
    /// otherwise one refreshed with what changed.
    pub async fn current(&self) -> Result<Arc<Snapshot>, RulesError> {
        let generations = storage::generations(self.store.pool()).await?;
        let cached = self.cached();
        if is_fresh(&cached, generations) {
            return Ok(cached);
        }
        let _reloading = self.reload.lock().await;
        let cached = self.cached();
        if is_fresh(&cached, generations) {
            return Ok(cached);
        }
        // The generations were read before the rows: rows newer than them only cause one more
        // refresh later, never a stale view labelled as current.
        let mut policies = cached.policies.clone();
        let mut policy_generation = cached.policy_generation;
        if cached.policy_generation < generations.policy {
            for record in
                storage::policies::after(self.store.pool(), cached.policy_generation).await?
            {
                policy_generation = policy_generation.max(record.publish_sequence);
                policies.push(Arc::new(compile_stored(record)?));
            }
        }
        let denylist = if cached.denylist_generation != generations.denylist {
            Arc::new(
                storage::denylist::all(self.store.pool())
                    .await?
                    .into_iter()
                    .map(|entry| entry.uscc.as_str().to_owned())
                    .collect(),
            )
        } else {
            cached.denylist.clone()
        };
        let fresh = Arc::new(Snapshot {
            policy_generation: policy_generation.max(generations.policy),
            denylist_generation: generations.denylist,
            policies,
            denylist,
        });
        *self
            .snapshot
            .write()
            .expect("no thread panics holding the snapshot lock") = fresh.clone();
        Ok(fresh)
    }
}

fn is_fresh(snapshot: &Snapshot, generations: Generations) -> bool {
    snapshot.policy_generation >= generations.policy
        && snapshot.denylist_generation == generations.denylist
}
