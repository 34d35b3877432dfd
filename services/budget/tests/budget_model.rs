//! Model-based test: random sequences of reserve, commit, release, extend, revoke, expire, clock
//! advances, restarts and replays run against the real store and against a small reference model; after
//! every step the outcomes, the pool's counters and every reservation's state must agree.

// Amounts are written yuan_fen (`600_00` is 600.00 CNY), which clippy reads as odd grouping.
#![allow(clippy::inconsistent_digit_grouping)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use subsidy_budget::domain::{Commit, Extend, PoolId, Release, ReservationState, Reserve, Revoke};
use subsidy_budget::ops::Who;
use subsidy_budget::storage::Store;
use subsidy_budget::{Budget, BudgetError};
use subsidy_common::RequestId;
use subsidy_proto::budget as pb;
use support::*;

const TOTAL: i64 = 100_000;
const BENEFICIARY_CAP: i64 = 40_000;
const RESERVATION_CAP: i64 = 30_000;
const SECOND_US: i64 = 1_000_000;

#[derive(Clone, Debug)]
enum Op {
    Reserve {
        who: usize,
        amount: i64,
        hold_thousands: i64,
    },
    Commit {
        pick: usize,
        per_mille: i64,
    },
    Release {
        pick: usize,
    },
    Extend {
        pick: usize,
        hold_thousands: i64,
    },
    Revoke {
        pick: usize,
    },
    Expire,
    Advance {
        thousands: i64,
    },
    Restart,
    Replay {
        pick: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 1..=35_000i64, 1..=4i64).prop_map(|(who, amount, hold_thousands)| Op::Reserve { who, amount, hold_thousands }),
        2 => (any::<usize>(), 1..=1000i64).prop_map(|(pick, per_mille)| Op::Commit { pick, per_mille }),
        1 => any::<usize>().prop_map(|pick| Op::Release { pick }),
        1 => (any::<usize>(), 1..=4i64).prop_map(|(pick, hold_thousands)| Op::Extend { pick, hold_thousands }),
        1 => any::<usize>().prop_map(|pick| Op::Revoke { pick }),
        1 => Just(Op::Expire),
        1 => (1..=3i64).prop_map(|thousands| Op::Advance { thousands }),
        1 => Just(Op::Restart),
        1 => any::<usize>().prop_map(|pick| Op::Replay { pick }),
    ]
}

/// What the model expects of one step.
#[derive(Debug, PartialEq, Eq)]
enum Expect {
    Ok,
    Refused(&'static str),
}

fn kind(error: &BudgetError) -> &'static str {
    match error {
        BudgetError::Refused(_) => error.reason(),
        other => panic!("the model never expects {other:?}"),
    }
}

#[derive(Clone, Debug)]
struct ModelReservation {
    id: String,
    who: usize,
    held: i64,
    committed: i64,
    expires_at: i64,
    state: ReservationState,
}

#[derive(Default, Debug)]
struct Model {
    now: i64,
    held: i64,
    committed: i64,
    reservations: Vec<ModelReservation>,
    /// Successful reserves: (request id, fingerprint, command, reservation id).
    reserves: Vec<(Reserve, String, String)>,
}

impl Model {
    fn used(&self, who: usize) -> i64 {
        self.reservations
            .iter()
            .filter(|r| r.who == who)
            .map(|r| match r.state {
                ReservationState::Held => r.held,
                ReservationState::Committed => r.committed,
                _ => 0,
            })
            .sum()
    }

    fn reserve(&self, who: usize, amount: i64) -> Expect {
        if amount > RESERVATION_CAP {
            Expect::Refused("RESERVATION_CAP_EXCEEDED")
        } else if amount > BENEFICIARY_CAP {
            Expect::Refused("BENEFICIARY_CAP_EXCEEDED")
        } else if TOTAL - self.held - self.committed < amount {
            Expect::Refused("POOL_EXHAUSTED")
        } else if self.used(who) + amount > BENEFICIARY_CAP {
            Expect::Refused("BENEFICIARY_CAP_EXCEEDED")
        } else {
            Expect::Ok
        }
    }

    fn live(&self, index: usize) -> bool {
        let r = &self.reservations[index];
        r.state == ReservationState::Held && r.expires_at > self.now
    }

    fn settle(&mut self, index: usize, committed: i64, state: ReservationState) {
        let r = &mut self.reservations[index];
        self.held -= r.held;
        self.committed += committed;
        r.committed = committed;
        r.state = state;
    }
}

struct World {
    url: String,
    store: Budget,
    pool: String,
    actor: Who,
}

async fn run_case(url: &str, pool: String, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut world = World {
        url: url.to_owned(),
        store: store(url, 0).await,
        pool,
        actor: Who::system("model"),
    };
    create_pool(
        &world.store,
        &world.pool,
        TOTAL,
        Some(BENEFICIARY_CAP),
        Some(RESERVATION_CAP),
    )
    .await;
    let mut model = Model::default();
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Reserve {
                who,
                amount,
                hold_thousands,
            } => {
                // Holds last k·1000 + 500 s and the clock moves in steps of 1000 s, so no hold
                // expires within the real seconds a case takes to run: the model stays exact.
                let hold_seconds = hold_thousands * 1000 + 500;
                let cmd = Reserve {
                    request_id: RequestId::parse(&format!("{}-{step}", world.pool)).unwrap(),
                    pool_id: PoolId::parse(&world.pool).unwrap(),
                    beneficiary: beneficiary(who),
                    amount: fen(amount),
                    reference: format!("step-{step}"),
                    hold_seconds: Some(hold_seconds),
                };
                let fingerprint = format!("{who}:{amount}:{hold_seconds}");
                let expected = model.reserve(who, amount);
                let result = world
                    .store
                    .reserve(&cmd, &fingerprint, &world.actor, reserve_response)
                    .await;
                match (expected, result) {
                    (Expect::Ok, Ok(response)) => {
                        let id = response.reservation.unwrap().reservation_id;
                        model.held += amount;
                        model.reservations.push(ModelReservation {
                            id: id.clone(),
                            who,
                            held: amount,
                            committed: 0,
                            expires_at: model.now + hold_seconds * SECOND_US,
                            state: ReservationState::Held,
                        });
                        model.reserves.push((cmd, fingerprint, id));
                    }
                    (Expect::Refused(reason), Err(error)) => prop_assert_eq!(reason, kind(&error)),
                    (expected, result) => {
                        prop_assert!(false, "step {step}: expected {expected:?}, got {result:?}")
                    }
                }
            }
            Op::Commit { .. } | Op::Release { .. } | Op::Extend { .. } | Op::Revoke { .. }
                if model.reservations.is_empty() => {}
            Op::Commit { pick, per_mille } => {
                let index = pick % model.reservations.len();
                let target = model.reservations[index].clone();
                let amount = (target.held * per_mille / 1000).max(1);
                let cmd = Commit {
                    request_id: RequestId::parse(&format!("{}-{step}", world.pool)).unwrap(),
                    reservation_id: target.id.clone(),
                    amount: fen(amount),
                };
                let result = world
                    .store
                    .commit(&cmd, &format!("commit:{amount}"), &world.actor, |_| ())
                    .await;
                if model.live(index) {
                    prop_assert!(
                        result.is_ok(),
                        "step {step}: commit of a live hold failed: {result:?}"
                    );
                    model.settle(index, amount, ReservationState::Committed);
                } else {
                    prop_assert_eq!(result.map_err(|e| kind(&e)), Err("RESERVATION_NOT_HELD"));
                }
            }
            Op::Release { pick } => {
                let index = pick % model.reservations.len();
                let cmd = Release {
                    request_id: RequestId::parse(&format!("{}-{step}", world.pool)).unwrap(),
                    reservation_id: model.reservations[index].id.clone(),
                    reason: "model".into(),
                };
                let result = world
                    .store
                    .release(&cmd, "release", &world.actor, |_| ())
                    .await;
                if model.live(index) {
                    prop_assert!(
                        result.is_ok(),
                        "step {step}: release of a live hold failed: {result:?}"
                    );
                    model.settle(index, 0, ReservationState::Released);
                } else {
                    prop_assert_eq!(result.map_err(|e| kind(&e)), Err("RESERVATION_NOT_HELD"));
                }
            }
            Op::Extend {
                pick,
                hold_thousands,
            } => {
                let index = pick % model.reservations.len();
                let hold_seconds = hold_thousands * 1000 + 500;
                let cmd = Extend {
                    request_id: RequestId::parse(&format!("{}-{step}", world.pool)).unwrap(),
                    reservation_id: model.reservations[index].id.clone(),
                    hold_seconds: Some(hold_seconds),
                };
                let result = world
                    .store
                    .extend(
                        &cmd,
                        &format!("extend:{hold_seconds}"),
                        &world.actor,
                        |_| (),
                    )
                    .await;
                if model.live(index) {
                    prop_assert!(
                        result.is_ok(),
                        "step {step}: extension of a live hold failed: {result:?}"
                    );
                    let r = &mut model.reservations[index];
                    r.expires_at = r.expires_at.max(model.now + hold_seconds * SECOND_US);
                } else {
                    prop_assert_eq!(result.map_err(|e| kind(&e)), Err("RESERVATION_NOT_HELD"));
                }
            }
            Op::Revoke { pick } => {
                let index = pick % model.reservations.len();
                let cmd = Revoke {
                    request_id: RequestId::parse(&format!("{}-{step}", world.pool)).unwrap(),
                    reservation_id: model.reservations[index].id.clone(),
                    reason: "model".into(),
                };
                let result = world
                    .store
                    .revoke(&cmd, "revoke", &world.actor, |_| ())
                    .await;
                let r = &mut model.reservations[index];
                if r.state == ReservationState::Committed {
                    prop_assert!(
                        result.is_ok(),
                        "step {step}: revocation of a commitment failed: {result:?}"
                    );
                    model.committed -= r.committed;
                    r.committed = 0;
                    r.state = ReservationState::Revoked;
                } else {
                    prop_assert_eq!(
                        result.map_err(|e| kind(&e)),
                        Err("RESERVATION_NOT_COMMITTED")
                    );
                }
            }
            Op::Expire => {
                world.store.expire_due(10_000).await.unwrap();
                for index in 0..model.reservations.len() {
                    let r = &model.reservations[index];
                    if r.state == ReservationState::Held && r.expires_at <= model.now {
                        model.settle(index, 0, ReservationState::Expired);
                    }
                }
            }
            Op::Advance { thousands } => {
                model.now += thousands * 1000 * SECOND_US;
                world.store = Budget::new(Store::with_clock_offset(
                    world.store.db().clone(),
                    model.now,
                ));
            }
            Op::Restart => {
                world.store.db().pool.close().await;
                world.store = Budget::new(Store::with_clock_offset(
                    connect(&world.url).await,
                    model.now,
                ));
            }
            Op::Replay { pick } => {
                if model.reserves.is_empty() {
                    continue;
                }
                let (cmd, fingerprint, id) = model.reserves[pick % model.reserves.len()].clone();
                let response = world
                    .store
                    .reserve(&cmd, &fingerprint, &world.actor, reserve_response)
                    .await;
                let replayed = response.map(|r| r.reservation.unwrap().reservation_id);
                prop_assert_eq!(
                    replayed.ok(),
                    Some(id),
                    "a replay returns the original reservation"
                );
            }
        }
        check(&world, &model).await?;
    }
    world.store.db().pool.close().await;
    Ok(())
}

fn reserve_response(row: &subsidy_budget::domain::Reservation) -> pb::ReserveResponse {
    pb::ReserveResponse {
        reservation: Some(subsidy_budget::wire::reservation(row)),
    }
}

async fn check(world: &World, model: &Model) -> Result<(), TestCaseError> {
    let pool = world.store.get_pool(&world.pool).await.unwrap().unwrap();
    prop_assert_eq!(
        (pool.held_fen, pool.committed_fen),
        (model.held, model.committed)
    );
    for r in &model.reservations {
        let row = world.store.get_reservation(&r.id).await.unwrap().unwrap();
        prop_assert_eq!(row.state, r.state, "reservation {}", r.id);
        prop_assert_eq!(row.committed_fen, r.committed);
    }
    let violations = invariant_violations(world.store.db(), &world.pool).await;
    prop_assert!(violations.is_empty(), "{:?}", violations);
    Ok(())
}

#[test]
fn the_budget_agrees_with_a_reference_model_over_random_histories() {
    // Proves: for any history of operations, restarts and replays, the store's outcomes,
    // counters and states are exactly those of the reference model. 256 cases by default.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let url = runtime.block_on(async { fresh_db("budget_model").await.url });
    let case = AtomicUsize::new(0);
    let config = ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(ops in proptest::collection::vec(op(), 1..30))| {
        let pool = format!("model-{}", case.fetch_add(1, Ordering::Relaxed));
        runtime.block_on(run_case(&url, pool, ops))?;
    });
}
