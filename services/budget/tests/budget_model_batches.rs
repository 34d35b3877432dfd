//! Model-based test of group commit: random operations arrive in waves of concurrent callers,
//! so they are decided in batches in an order nobody chose. The ledger says what order that
//! was; replaying the ledger through the sequential reference model must reproduce every
//! counter, every entry's before and after, and every reservation, and each refusal must have
//! been right at some point while its wave was being applied.

// Amounts are written yuan_fen (`600_00` is 600.00 CNY), which clippy reads as odd grouping.
#![allow(clippy::inconsistent_digit_grouping)]

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::future::join_all;
use proptest::prelude::*;
use subsidy_budget::domain::{Commit, PoolId, Refusal, Release, Reserve};
use subsidy_budget::ops::Who;
use subsidy_budget::{Budget, BudgetError};
use subsidy_common::RequestId;
use support::*;

const TOTAL: i64 = 100_000;
const BENEFICIARY_CAP: i64 = 40_000;
const RESERVATION_CAP: i64 = 30_000;
const BENEFICIARIES: usize = 4;

#[derive(Clone, Debug)]
enum Op {
    Reserve { who: usize, amount: i64 },
    Commit { pick: usize, per_mille: i64 },
    Release { pick: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..BENEFICIARIES, 1..=32_000i64).prop_map(|(who, amount)| Op::Reserve { who, amount }),
        3 => (any::<usize>(), 1..=1000i64).prop_map(|(pick, per_mille)| Op::Commit { pick, per_mille }),
        2 => any::<usize>().prop_map(|pick| Op::Release { pick }),
    ]
}

/// The sequential reference: counters, usages and the reservations' states.
#[derive(Clone, Debug, Default)]
struct Model {
    held: i64,
    committed: i64,
    used: HashMap<String, i64>,
    /// id → (beneficiary, held, committed, state).
    reservations: HashMap<String, (String, i64, i64, &'static str)>,
}

impl Model {
    fn available(&self) -> i64 {
        TOTAL - self.held - self.committed
    }

    /// Applies one ledger entry, checking it could be applied and that its recorded before and
    /// after are the model's.
    fn apply(&mut self, entry: &subsidy_budget::domain::LedgerEntry) -> Result<(), String> {
        let before = (entry.held_before_fen, entry.committed_before_fen);
        if before != (self.held, self.committed) {
            return Err(format!(
                "entry {} starts from {before:?}, the model from {:?}",
                entry.sequence,
                (self.held, self.committed)
            ));
        }
        let who = entry.beneficiary_uscc.clone();
        match entry.kind.as_str() {
            "POOL_CREATED" => {}
            "RESERVED" => {
                let amount = entry.amount_fen;
                let used = self.used.get(&who).copied().unwrap_or(0);
                if amount > RESERVATION_CAP
                    || amount > self.available()
                    || used + amount > BENEFICIARY_CAP
                {
                    return Err(format!("the model refuses entry {}", entry.sequence));
                }
                self.held += amount;
                *self.used.entry(who.clone()).or_default() += amount;
                self.reservations
                    .insert(entry.reservation_id.clone(), (who, amount, 0, "HELD"));
            }
            kind @ ("COMMITTED" | "RELEASED") => {
                let Some((owner, held, _, state)) =
                    self.reservations.get(&entry.reservation_id).cloned()
                else {
                    return Err(format!("entry {} settles an unknown hold", entry.sequence));
                };
                if state != "HELD" {
                    return Err(format!(
                        "entry {} settles a hold that is {state}",
                        entry.sequence
                    ));
                }
                let kind: &'static str = if kind == "COMMITTED" {
                    "COMMITTED"
                } else {
                    "RELEASED"
                };
                let committed = if kind == "COMMITTED" {
                    entry.amount_fen
                } else {
                    0
                };
                self.held -= held;
                self.committed += committed;
                *self.used.get_mut(&owner).expect("a holder has usage") += committed - held;
                self.reservations
                    .insert(entry.reservation_id.clone(), (owner, held, committed, kind));
            }
            other => return Err(format!("unexpected entry kind {other}")),
        }
        let after = (entry.held_after_fen, entry.committed_after_fen);
        if after != (self.held, self.committed) {
            return Err(format!(
                "entry {} ends at {after:?}, the model at {:?}",
                entry.sequence,
                (self.held, self.committed)
            ));
        }
        Ok(())
    }

    /// Whether `refusal` of `op` holds in this state.
    fn justifies(&self, op: &Op, target: Option<&str>, refusal: &Refusal) -> bool {
        match (op, refusal) {
            (Op::Reserve { amount, .. }, Refusal::ReservationCapExceeded { .. }) => {
                *amount > RESERVATION_CAP
            }
            (Op::Reserve { amount, .. }, Refusal::PoolExhausted { .. }) => {
                *amount > self.available()
            }
            (Op::Reserve { who, amount }, Refusal::BeneficiaryCapExceeded { .. }) => {
                let used = self
                    .used
                    .get(beneficiary(*who).as_str())
                    .copied()
                    .unwrap_or(0);
                used + amount > BENEFICIARY_CAP
            }
            (Op::Commit { .. } | Op::Release { .. }, Refusal::ReservationNotHeld { .. }) => target
                .and_then(|id| self.reservations.get(id))
                .is_some_and(|(_, _, _, state)| *state != "HELD"),
            _ => false,
        }
    }
}

/// One operation of a wave: what was asked, the hold it named, and how it ended.
type Outcome = (Op, Option<String>, Result<(), BudgetError>);
/// A wave: the ledger sequence it started after, and its operations.
type Wave = (i64, Vec<Outcome>);

async fn run_case(budget: &Budget, pool: &str, waves: Vec<Vec<Op>>) -> Result<(), TestCaseError> {
    create_pool(
        budget,
        pool,
        TOTAL,
        Some(BENEFICIARY_CAP),
        Some(RESERVATION_CAP),
    )
    .await;
    let actor = Who::system("model");
    let mut holds: Vec<(String, i64)> = Vec::new();
    // Per wave: the ledger sequence it started after, and each op with its outcome.
    let mut history: Vec<Wave> = Vec::new();
    let mut step = 0;
    for wave in waves {
        let start_sequence = ledger_sequence(budget, pool).await;
        let calls = wave.iter().map(|op| {
            step += 1;
            let request_id = RequestId::parse(&format!("{pool}-{step}")).unwrap();
            let target = match op {
                Op::Commit { pick, .. } | Op::Release { pick } if !holds.is_empty() => {
                    Some(holds[pick % holds.len()].clone())
                }
                _ => None,
            };
            let (budget, actor, op) = (budget.clone(), actor.clone(), op.clone());
            let pool = pool.to_owned();
            async move {
                let outcome = match (&op, &target) {
                    (Op::Reserve { who, amount }, _) => budget
                        .reserve(
                            &Reserve {
                                request_id,
                                pool_id: PoolId::parse(&pool).unwrap(),
                                beneficiary: beneficiary(*who),
                                amount: fen(*amount),
                                reference: "model".into(),
                                hold_seconds: Some(3600),
                            },
                            "f",
                            &actor,
                            subsidy_budget::wire::reservation,
                        )
                        .await
                        .map(|r| Some((r.reservation_id, r.held_amount))),
                    (Op::Commit { per_mille, .. }, Some((id, held))) => budget
                        .commit(
                            &Commit {
                                request_id,
                                reservation_id: id.clone(),
                                amount: fen((held * per_mille / 1000).max(1)),
                            },
                            "f",
                            &actor,
                            |_| (),
                        )
                        .await
                        .map(|()| None),
                    (Op::Release { .. }, Some((id, _))) => budget
                        .release(
                            &Release {
                                request_id,
                                reservation_id: id.clone(),
                                reason: "model".into(),
                            },
                            "f",
                            &actor,
                            |_| (),
                        )
                        .await
                        .map(|()| None),
                    (_, None) => return None,
                };
                Some((op, target.map(|t| t.0), outcome))
            }
        });
        let outcomes: Vec<_> = join_all(calls).await.into_iter().flatten().collect();
        let mut recorded = Vec::new();
        for (op, target, outcome) in outcomes {
            match outcome {
                Ok(Some((id, held))) => {
                    holds.push((id, fen_of(&held)));
                    recorded.push((op, target, Ok(())));
                }
                Ok(None) => recorded.push((op, target, Ok(()))),
                Err(error) => recorded.push((op, target, Err(error))),
            }
        }
        history.push((start_sequence, recorded));
    }
    check(budget, pool, history).await
}

async fn ledger_sequence(budget: &Budget, pool: &str) -> i64 {
    let entries = budget.list_ledger(pool, 0, 100_000).await.unwrap();
    entries.last().map(|e| e.entry.sequence).unwrap_or(0)
}

async fn check(budget: &Budget, pool: &str, history: Vec<Wave>) -> Result<(), TestCaseError> {
    let entries = budget.list_ledger(pool, 0, 100_000).await.unwrap();
    // The model's state after each sequence number (index 0: before the first entry).
    let mut model = Model::default();
    let mut states = vec![model.clone()];
    for stored in &entries {
        model.apply(&stored.entry).map_err(TestCaseError::fail)?;
        states.push(model.clone());
    }
    let row = budget.get_pool(pool).await.unwrap().unwrap();
    prop_assert_eq!(
        (row.held_fen, row.committed_fen),
        (model.held, model.committed)
    );
    for (id, (_, _, committed, state)) in &model.reservations {
        let stored = budget.get_reservation(id).await.unwrap().unwrap();
        prop_assert_eq!(stored.state.as_str(), *state, "reservation {}", id);
        prop_assert_eq!(stored.committed_fen, *committed);
    }
    let violations = invariant_violations(budget.db(), pool).await;
    prop_assert!(violations.is_empty(), "{:?}", violations);
    let mut waves = history.into_iter().peekable();
    while let Some((start, outcomes)) = waves.next() {
        let end = waves
            .peek()
            .map(|(next, _)| *next)
            .unwrap_or(entries.len() as i64);
        let successes = outcomes.iter().filter(|(_, _, o)| o.is_ok()).count() as i64;
        prop_assert_eq!(
            end - start,
            successes,
            "one ledger entry per success of the wave"
        );
        for (op, target, outcome) in &outcomes {
            let Err(error) = outcome else { continue };
            let BudgetError::Refused(refusal) = error else {
                return Err(TestCaseError::fail(format!("{op:?} failed with {error:?}")));
            };
            let window = &states[start as usize..=end as usize];
            prop_assert!(
                window
                    .iter()
                    .any(|state| state.justifies(op, target.as_deref(), refusal)),
                "{:?} was refused with {:?}, which no state of its wave justifies",
                op,
                refusal
            );
        }
    }
    Ok(())
}

#[test]
fn batches_of_concurrent_operations_agree_with_the_sequential_model() {
    // Proves: whatever order the writer batches concurrent operations in, the result is that
    // of the sequential reference model applied in the ledger's order, and no refusal is wrong.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let budget = runtime.block_on(async {
        let db = fresh_db("budget_model_batches").await;
        store(&db.url, 0).await
    });
    let case = AtomicUsize::new(0);
    let cases = if subsidy_common::db::testing::test_backend().is_some() {
        12
    } else {
        32
    };
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let wave = proptest::collection::vec(op(), 1..16);
    proptest!(config, |(waves in proptest::collection::vec(wave, 1..8))| {
        let pool = format!("batches-{}", case.fetch_add(1, Ordering::Relaxed));
        runtime.block_on(run_case(&budget, &pool, waves))?;
    });
}
