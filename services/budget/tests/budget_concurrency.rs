//! Concurrency and fault tolerance of the budget: random concurrent workloads, commits racing
//! expiry, and PostgreSQL backends killed under load. Every claim is checked against the rows.

// Amounts are written yuan_fen (`600_00` is 600.00 CNY), which clippy reads as odd grouping.
#![allow(clippy::inconsistent_digit_grouping)]

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::join_all;
use rand::{Rng, SeedableRng};
use subsidy_budget::domain::{Commit, PoolId, Refusal, Reserve};
use subsidy_budget::ops::Accounting;
use subsidy_budget::ops::Who;
use subsidy_budget::storage::Store;
use subsidy_budget::{Budget, BudgetError};
use subsidy_common::RequestId;
use subsidy_proto::budget as pb;
use subsidy_proto::status::reason;
use support::*;
use tonic::Code;

const TASKS: usize = 64;
const OPS_PER_TASK: usize = 25;
const BENEFICIARIES: usize = 5;

/// What a random workload saw that it should not have.
#[derive(Default, Debug)]
struct Outcome {
    unexpected: Vec<String>,
    refused_for_money: usize,
}

async fn random_workload(store: Budget, pool: &str) -> Outcome {
    random_workload_across(vec![store], pool).await
}

/// The random workload with its clients spread over one server per budget (replicas of the
/// service on one database).
async fn random_workload_across(stores: Vec<Budget>, pool: &str) -> Outcome {
    let mut clients = Vec::new();
    for store in stores {
        clients.push(spawn(store).await);
    }
    let refused = Arc::new(AtomicUsize::new(0));
    let tasks = (0..TASKS).map(|task| {
        let mut client = clients[task % clients.len()].clone();
        let pool = pool.to_owned();
        let refused = refused.clone();
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(task as u64);
            let mut mine: Vec<(String, i64)> = Vec::new();
            let mut unexpected = Vec::new();
            for op in 0..OPS_PER_TASK {
                let request_id = format!("t{task}-op{op}");
                let roll = rng.random_range(0..100);
                let result = if roll < 50 || mine.is_empty() {
                    let amount = rng.random_range(1..=30_000);
                    let hold_seconds = if rng.random_bool(0.2) { 1 } else { 3600 };
                    client
                        .reserve(pb::ReserveRequest {
                            request_id,
                            pool_id: pool.clone(),
                            beneficiary_uscc: beneficiary(rng.random_range(0..BENEFICIARIES))
                                .to_string(),
                            amount: cny(amount),
                            reference: format!("task-{task}"),
                            hold_seconds,
                        })
                        .await
                        .map(|r| {
                            let r = r.into_inner().reservation.unwrap();
                            mine.push((r.reservation_id, fen_of(&r.held_amount)));
                        })
                } else if roll < 70 {
                    let (id, held) = mine.swap_remove(rng.random_range(0..mine.len()));
                    let amount = rng.random_range(1..=held);
                    client
                        .commit(pb::CommitRequest {
                            request_id,
                            reservation_id: id,
                            amount: cny(amount),
                        })
                        .await
                        .map(drop)
                } else if roll < 85 {
                    let (id, _) = mine.swap_remove(rng.random_range(0..mine.len()));
                    client
                        .release(pb::ReleaseRequest {
                            request_id,
                            reservation_id: id,
                            reason: "changed plans".into(),
                        })
                        .await
                        .map(drop)
                } else {
                    client
                        .expire_reservations(pb::ExpireReservationsRequest {
                            limit: 0,
                            request_id,
                        })
                        .await
                        .map(drop)
                };
                if let Err(status) = result {
                    match (status.code(), reason(&status).as_deref()) {
                        (
                            Code::FailedPrecondition,
                            Some("POOL_EXHAUSTED" | "BENEFICIARY_CAP_EXCEEDED"),
                        ) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        // The hold expired before this task got to it.
                        (Code::FailedPrecondition, Some("RESERVATION_NOT_HELD")) => {}
                        (code, reason) => unexpected.push(format!(
                            "{code:?} {} {}",
                            reason.unwrap_or_default(),
                            status.message()
                        )),
                    }
                }
            }
            unexpected
        })
    });
    let unexpected = join_all(tasks)
        .await
        .into_iter()
        .flat_map(Result::unwrap)
        .collect();
    Outcome {
        unexpected,
        refused_for_money: refused.load(Ordering::Relaxed),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_random_concurrent_clients_never_break_an_invariant() {
    // Proves: under 64 concurrent clients doing random reserve/commit/release/expire on a small
    // pool with beneficiaries near their caps, counters equal the row sums, nothing exceeds the
    // pool or a cap, and the ledger has exactly one entry per state change.
    let db = fresh_db("budget_race").await;
    let store = store(&db.url, 0).await;
    create_pool(&store, "race", 500_000, Some(150_000), None).await;
    let inspect = store.db().clone();
    let outcome = random_workload(store, "race").await;
    assert!(
        outcome.unexpected.is_empty(),
        "unexpected errors: {:?}",
        outcome.unexpected
    );
    assert!(
        outcome.refused_for_money > 0,
        "the workload must press against the pool and the caps"
    );
    assert_invariants(&inspect, "race").await;
    let verify = Budget::new(Store::new(inspect.clone()))
        .verify_ledger()
        .await
        .unwrap();
    assert_eq!(verify.first_problem, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_writing_one_pool_never_break_an_invariant() {
    // Proves: two budget processes' worth of writers (each batching its own callers) on one
    // database, under the random workload, keep every invariant: the pool row's lock orders
    // their batches, and the ledger stays one unbroken chain.
    let db = fresh_db("budget_replicas").await;
    let first = store(&db.url, 0).await;
    let second = store(&db.url, 0).await;
    create_pool(&first, "replicas", 500_000, Some(150_000), None).await;
    let inspect = first.db().clone();
    let outcome = random_workload_across(vec![first, second], "replicas").await;
    assert!(
        outcome.unexpected.is_empty(),
        "unexpected errors: {:?}",
        outcome.unexpected
    );
    assert!(
        outcome.refused_for_money > 0,
        "the workload must press on the pool"
    );
    assert_invariants(&inspect, "replicas").await;
    let verify = Budget::new(Store::new(inspect.clone()))
        .verify_ledger()
        .await
        .unwrap();
    assert_eq!(verify.first_problem, None);
}

/// Writers of the live-verification test.
const VERIFY_WRITERS: usize = 16;
/// Verifications made while they write.
const VERIFICATIONS: usize = 25;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_ledger_under_sixteen_writers_never_reports_a_consistent_ledger_broken() {
    // Proves VerifyLedger reads one snapshot: while 16 clients reserve and commit without
    // pause, every verification finds the chain, the heads and the counters consistent, and
    // each one sees a ledger that grew since the one before (it really ran among the writes).
    let db = fresh_db("budget_verify_live").await;
    let budget = store(&db.url, 0).await;
    create_pool(&budget, "live", 1_000_000_000_00, None, None).await;
    let client = spawn(budget).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..VERIFY_WRITERS)
        .map(|writer| {
            let mut client = client.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let reservation = client
                        .reserve(pb::ReserveRequest {
                            request_id: format!("w{writer}-r{n}"),
                            pool_id: "live".into(),
                            beneficiary_uscc: beneficiary(writer).to_string(),
                            amount: cny(100_00),
                            reference: format!("writer-{writer}"),
                            hold_seconds: 3600,
                        })
                        .await
                        .expect("reserve")
                        .into_inner()
                        .reservation
                        .unwrap();
                    client
                        .commit(pb::CommitRequest {
                            request_id: format!("w{writer}-c{n}"),
                            reservation_id: reservation.reservation_id,
                            amount: cny(60_00),
                        })
                        .await
                        .expect("commit");
                    n += 1;
                }
            })
        })
        .collect();
    let mut checker = client.clone();
    let mut seen = Vec::new();
    for _ in 0..VERIFICATIONS {
        let verdict = checker
            .verify_ledger(pb::VerifyLedgerRequest {})
            .await
            .expect("verify")
            .into_inner();
        assert!(
            verdict.intact,
            "a consistent ledger reported broken under load: pool {} sequence {}: {}",
            verdict.first_broken_pool_id, verdict.first_broken_sequence, verdict.problem
        );
        seen.push(verdict.entries_checked);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    let grew = seen.windows(2).filter(|pair| pair[1] > pair[0]).count();
    assert!(
        grew >= VERIFICATIONS / 2,
        "the verifications ran among the writes: {seen:?}"
    );
    assert_invariants(&connect(&db.url).await, "live").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_workload_catches_a_naive_read_check_write_budget() {
    // Proves the test above can fail: with read-then-check-then-write accounting the same
    // workload leaves counters that disagree with the rows (or trips the CHECK backstop).
    let db = fresh_db("budget_naive").await;
    let store = Budget::with_accounting(store(&db.url, 0).await.store().clone(), Accounting::Naive);
    create_pool(&store, "naive", 500_000, Some(150_000), None).await;
    let inspect = store.db().clone();
    let budget = store.clone();
    let outcome = random_workload(store, "naive").await;
    let violations = invariant_violations(&inspect, "naive").await;
    // Overspending shows as rows that disagree with the counters, as the database's CHECK
    // backstop refusing a write (INVARIANT_BACKSTOP), or as the domain's invariant assertions
    // stopping a batch (its callers are told to retry: STORAGE_UNAVAILABLE). Anything else is
    // another fault, and fails this test.
    let panics = budget.batch_panics();
    let broke_invariants = panics.iter().all(|message| {
        message.contains("broke its invariant") || message.contains("went negative")
    });
    assert!(
        broke_invariants,
        "a batch panicked for another reason than a broken invariant: {panics:?}"
    );
    let (backstops, others): (Vec<&String>, Vec<&String>) =
        outcome.unexpected.iter().partition(|status| {
            status.contains("INVARIANT_BACKSTOP")
                || (!panics.is_empty() && status.contains("STORAGE_UNAVAILABLE"))
        });
    assert!(
        others.is_empty(),
        "the naive budget failed for another reason than overspending: {others:?}"
    );
    assert!(
        !violations.is_empty() || !backstops.is_empty() || !panics.is_empty(),
        "the naive budget overspent unnoticed: the concurrency test would not catch a real race"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commits_racing_expiry_on_a_thousand_holds_end_in_exactly_one_terminal_state() {
    // Proves: when commits and the expiry sweep race on the same 1,000 holds, each hold ends
    // COMMITTED or EXPIRED (never both, never neither), and every fen is accounted for.
    let db = fresh_db("budget_expiry_race").await;
    let committer = store(&db.url, 0).await;
    // The sweeper's clock runs two minutes ahead, so every hold is due for it while the
    // committer still sees them as live: the two genuinely race.
    let sweeper = store(&db.url, 120_000_000).await;
    create_pool(&committer, "expiry-race", 1_000_000_000, None, None).await;
    let actor = Who::system("test");
    let mut holds = Vec::new();
    for i in 0..1000 {
        let cmd = Reserve {
            request_id: RequestId::parse(&format!("hold-{i}")).unwrap(),
            pool_id: PoolId::parse("expiry-race").unwrap(),
            beneficiary: beneficiary(i % 10),
            amount: fen(1_000 + i as i64),
            reference: format!("hold-{i}"),
            hold_seconds: Some(60),
        };
        let fingerprint = format!("f{i}");
        let row = committer.reserve(&cmd, &fingerprint, &actor, |row| pb::Reservation {
            reservation_id: row.reservation_id.clone(),
            held_amount: cny(row.held_fen),
            ..Default::default()
        });
        holds.push(row.await.unwrap());
    }
    let holds = Arc::new(holds);
    // Committers and sweepers start together, so that neither side is done before the other
    // has begun (on a loaded machine a task may otherwise start late). Beyond that, each side
    // first waits for the other to have won once (the sweepers for a first commit, each
    // committer after its first commit for a first expiry): on SQLite a writer that keeps
    // retaking the lock can otherwise starve the other side's writer for the whole run, and
    // then nothing raced. After that the two run freely.
    let start = Arc::new(tokio::sync::Barrier::new(8));
    let (commits, expiries) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut tasks = Vec::new();
    for worker in 0..6 {
        let committer = committer.clone();
        let holds = holds.clone();
        let start = start.clone();
        let (commits, expiries) = (commits.clone(), expiries.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let mut committed = 0;
            // The sweepers expire the earliest holds first, a batch at a time; the committers
            // start from the latest, so the two meet somewhere in the middle.
            for (i, hold) in holds
                .iter()
                .enumerate()
                .rev()
                .filter(|(i, _)| i % 6 == worker)
            {
                let cmd = Commit {
                    request_id: RequestId::parse(&format!("commit-{i}")).unwrap(),
                    reservation_id: hold.reservation_id.clone(),
                    amount: fen(fen_of(&hold.held_amount) / 2),
                };
                match committer
                    .commit(&cmd, &format!("c{i}"), &Who::system("test"), |_| ())
                    .await
                {
                    Ok(()) => {
                        committed += 1;
                        commits.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(BudgetError::Refused(Refusal::ReservationNotHeld { .. })) => {}
                    Err(other) => panic!("unexpected {other:?}"),
                }
                until(&expiries).await;
            }
            (committed, 0)
        }));
    }
    for _ in 0..2 {
        let sweeper = sweeper.clone();
        let start = start.clone();
        let (commits, expiries) = (commits.clone(), expiries.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            until(&commits).await;
            let mut expired = 0;
            // Sweep until nothing is HELD any more: a batch can come back empty because the
            // committers won every race in it, while later holds are still waiting.
            loop {
                let batch = sweeper.expire_due(25).await.unwrap();
                expired += batch;
                expiries.fetch_add(batch as usize, Ordering::SeqCst);
                let held: i64 = sqlx::query_scalar(
                    "SELECT CAST(COUNT(*) AS BIGINT) FROM reservations WHERE state = 'HELD'",
                )
                .fetch_one(&sweeper.db().pool)
                .await
                .unwrap();
                if held == 0 {
                    break;
                }
            }
            (0, expired)
        }));
    }
    let (committed, expired) = join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .fold((0i64, 0i64), |(c, e), (dc, de)| (c + dc, e + de));
    let inspect = committer.db().clone();
    let states: Vec<(String, i64)> = sqlx::query_as(
        "SELECT state, CAST(COUNT(*) AS BIGINT) FROM reservations WHERE pool_id = 'expiry-race' GROUP BY state ORDER BY state",
    )
    .fetch_all(&inspect.pool)
    .await
    .unwrap();
    let states: HashMap<String, i64> = states.into_iter().collect();
    assert_eq!(
        states.get("HELD"),
        None,
        "no hold is left undecided: {states:?}"
    );
    assert_eq!(states.get("COMMITTED").copied().unwrap_or(0), committed);
    assert_eq!(states.get("EXPIRED").copied().unwrap_or(0), expired);
    assert_eq!(committed + expired, 1000);
    assert!(
        committed > 0 && expired > 0,
        "both sides won some races: {states:?}"
    );
    assert_invariants(&inspect, "expiry-race").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_sweeping_expiry_at_once_expire_each_hold_exactly_once() {
    // Proves: two budget processes' expiry sweeps (each with its own pool of connections and
    // its own writer) running at once over the same 600 due holds expire each hold once: one
    // EXPIRED ledger entry per hold, the counts the sweeps report add up, and every invariant
    // holds. (On SQLite the same code runs with the file's lock between the two.)
    let db = fresh_db("budget_expiry_replicas").await;
    let maker = store(&db.url, 0).await;
    create_pool(&maker, "expiry-replicas", 1_000_000_000, None, None).await;
    let actor = Who::system("test");
    for i in 0..600 {
        let cmd = Reserve {
            request_id: RequestId::parse(&format!("due-{i}")).unwrap(),
            pool_id: PoolId::parse("expiry-replicas").unwrap(),
            beneficiary: beneficiary(i % 10),
            amount: fen(100 + i as i64),
            reference: format!("due-{i}"),
            hold_seconds: Some(60),
        };
        maker
            .reserve(&cmd, &format!("d{i}"), &actor, |_| ())
            .await
            .unwrap();
    }
    // Both replicas' clocks are two minutes ahead: every hold is due for both.
    let replicas = [
        store(&db.url, 120_000_000).await,
        store(&db.url, 120_000_000).await,
    ];
    let start = Arc::new(tokio::sync::Barrier::new(2));
    let sweeps: Vec<_> = replicas
        .iter()
        .cloned()
        .map(|replica| {
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                let mut expired = 0;
                loop {
                    let batch = replica.expire_due(25).await.unwrap();
                    expired += batch;
                    let held: i64 = sqlx::query_scalar(
                        "SELECT CAST(COUNT(*) AS BIGINT) FROM reservations WHERE state = 'HELD'",
                    )
                    .fetch_one(&replica.db().pool)
                    .await
                    .unwrap();
                    if held == 0 {
                        return expired;
                    }
                }
            })
        })
        .collect();
    let counts: Vec<i64> = join_all(sweeps)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(counts.iter().sum::<i64>(), 600, "sweeps report {counts:?}");
    let inspect = maker.db().clone();
    let entries: i64 = sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM ledger_entries WHERE pool_id = 'expiry-replicas' AND kind = 'EXPIRED'",
    )
    .fetch_one(&inspect.pool)
    .await
    .unwrap();
    assert_eq!(entries, 600, "one EXPIRED entry per hold");
    let distinct: i64 = sqlx::query_scalar(
        "SELECT CAST(COUNT(DISTINCT reservation_id) AS BIGINT) FROM ledger_entries WHERE pool_id = 'expiry-replicas' AND kind = 'EXPIRED'",
    )
    .fetch_one(&inspect.pool)
    .await
    .unwrap();
    assert_eq!(distinct, 600, "no hold expired twice");
    assert_invariants(&inspect, "expiry-replicas").await;
    let verify = Budget::new(Store::new(inspect.clone()))
        .verify_ledger()
        .await
        .unwrap();
    assert_eq!(verify.first_problem, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_postgres_connections_surface_as_unavailable_and_retries_take_effect_once() {
    // Proves: when PostgreSQL terminates the service's connections mid-load, callers see
    // UNAVAILABLE (never INTERNAL), retries with the same request_id take effect exactly once,
    // and no session is left idle in a transaction. PostgreSQL only (SQLite has no backends).
    let Some(server) = subsidy_common::db::testing::test_backend() else {
        eprintln!("skipped: set SUBSIDY_TEST_DATABASE=postgres://… to run the fault test");
        return;
    };
    let db = fresh_db("budget_fault").await;
    let database = db.url.rsplit('/').next().unwrap().to_owned();
    let store = store(&db.url, 0).await;
    create_pool(&store, "fault", 1_000_000_000, None, None).await;
    let inspect = store.db().clone();
    let client = spawn(store).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = {
        let stop = stop.clone();
        let database = database.clone();
        tokio::spawn(async move {
            use sqlx::Connection;
            let mut admin = sqlx::AnyConnection::connect(&server).await.unwrap();
            let mut kills = 0i64;
            // Kill for a bounded window, then let the load finish; 100 ms between rounds lets
            // the pool reconnect and get work in flight before the next round.
            let window_end = tokio::time::Instant::now() + Duration::from_millis(2500);
            while !stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < window_end {
                let killed: Vec<bool> = sqlx::query_scalar(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                )
                .bind(&database)
                .fetch_all(&mut admin)
                .await
                .unwrap();
                kills += killed.len() as i64;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            kills
        })
    };
    let unavailable = Arc::new(AtomicUsize::new(0));
    let workers = (0..8).map(|worker| {
        let client = client.clone();
        let unavailable = unavailable.clone();
        tokio::spawn(async move {
            for op in 0..25 {
                let key = format!("w{worker}-op{op}");
                let reservation = retry(&unavailable, || {
                    let mut client = client.clone();
                    let key = key.clone();
                    async move {
                        client
                            .reserve(pb::ReserveRequest {
                                request_id: format!("{key}/reserve"),
                                pool_id: "fault".into(),
                                beneficiary_uscc: beneficiary(worker).to_string(),
                                amount: cny(100),
                                reference: key,
                                hold_seconds: 0,
                            })
                            .await
                    }
                })
                .await
                .reservation
                .unwrap();
                retry(&unavailable, || {
                    let mut client = client.clone();
                    let request_id = format!("{key}/commit");
                    let reservation_id = reservation.reservation_id.clone();
                    async move {
                        client
                            .commit(pb::CommitRequest {
                                request_id,
                                reservation_id,
                                amount: cny(100),
                            })
                            .await
                    }
                })
                .await;
            }
            client.clone()
        })
    });
    let _ = join_all(workers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .count();
    stop.store(true, Ordering::Relaxed);
    let kills = killer.await.unwrap();
    assert!(kills > 0, "the killer terminated connections");
    assert!(
        unavailable.load(Ordering::Relaxed) > 0,
        "callers saw UNAVAILABLE at least once"
    );

    let per_reference: Vec<(String, i64)> = sqlx::query_as(
        "SELECT reference, CAST(COUNT(*) AS BIGINT) FROM reservations WHERE pool_id = 'fault' GROUP BY reference",
    )
    .fetch_all(&inspect.pool)
    .await
    .unwrap();
    assert_eq!(
        per_reference.len(),
        200,
        "every logical operation took effect"
    );
    assert!(
        per_reference.iter().all(|(_, n)| *n == 1),
        "and exactly once"
    );
    let not_committed: i64 = sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM reservations WHERE state <> 'COMMITTED'",
    )
    .fetch_one(&inspect.pool)
    .await
    .unwrap();
    assert_eq!(not_committed, 0);
    assert_invariants(&inspect, "fault").await;
    let idle_in_transaction: i64 = sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM pg_stat_activity WHERE datname = $1 AND state LIKE 'idle in transaction%'",
    )
    .bind(&database)
    .fetch_one(&inspect.pool)
    .await
    .unwrap();
    assert_eq!(
        idle_in_transaction, 0,
        "no session is left idle in a transaction"
    );
}

/// Calls `attempt` until it succeeds, counting UNAVAILABLE answers; any other error fails the test.
async fn retry<T, F, Fut>(unavailable: &AtomicUsize, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        match attempt().await {
            Ok(response) => return response.into_inner(),
            Err(status) if status.code() == Code::Unavailable => {
                unavailable.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(status) => panic!("expected success or UNAVAILABLE, got {status:?}"),
        }
    }
    panic!("no success within 60 s");
}

/// Waits until `counter` is above zero (bounded: a side that never wins fails the test).
async fn until(counter: &AtomicUsize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while counter.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the other side never won a race"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
