//! Test support: a fresh database per test, a budget server on port 0, and invariant checks
//! against the rows.
#![allow(dead_code)]

use std::time::Duration;

use sqlx::Row;
use subsidy_budget::Budget;
use subsidy_budget::domain::{NewPool, PoolId};
use subsidy_budget::storage::Store;
use subsidy_common::Money;
use subsidy_common::config::ServiceKind;
use subsidy_common::db::{Db, testing};
use subsidy_proto::budget::budget_service_client::BudgetServiceClient;
use subsidy_proto::google::r#type::Money as ProtoMoney;
use subsidy_testkit::Channel;

/// A database made for this test and its URL.
pub struct TestDb {
    pub url: String,
}

pub async fn fresh_db(label: &str) -> TestDb {
    TestDb {
        url: testing::fresh_database(label).await.url,
    }
}

pub async fn connect(url: &str) -> Db {
    Db::connect(url, 16, Duration::from_secs(10))
        .await
        .expect("connect to the test database")
}

/// The budget over a migrated store with clock offset `offset_us`.
pub async fn store(url: &str, offset_us: i64) -> Budget {
    let store = Store::with_clock_offset(connect(url).await, offset_us);
    store.migrate().await.expect("migrate");
    Budget::new(store)
}

pub fn yuan(n: i64) -> Money {
    Money::from_yuan(n).unwrap()
}

pub fn fen(n: i64) -> Money {
    Money::from_fen(n).unwrap()
}

/// `fen` as wire money, built field by field rather than with the kit's `cny`, so that the
/// tests can also send amounts no `Money` holds (e.g. `cny(-1)`).
pub fn cny(fen: i64) -> Option<ProtoMoney> {
    Some(ProtoMoney {
        currency_code: "CNY".into(),
        units: fen / 100,
        nanos: ((fen % 100) * 10_000_000) as i32,
    })
}

// The kit's reader of wire money, and its `n`-th Shandong enterprise as the `n`-th test
// beneficiary; not every test binary uses each of them.
#[allow(unused_imports)]
pub use subsidy_testkit::{fen_of, shandong as beneficiary};

pub async fn create_pool(
    store: &Budget,
    id: &str,
    total_fen: i64,
    beneficiary_cap_fen: Option<i64>,
    reservation_cap_fen: Option<i64>,
) {
    store
        .ensure_pool(&NewPool {
            pool_id: PoolId::parse(id).unwrap(),
            display_name: format!("test pool {id}"),
            total: fen(total_fen),
            beneficiary_cap: beneficiary_cap_fen.map(fen),
            reservation_cap: reservation_cap_fen.map(fen),
            default_hold_seconds: 3600,
        })
        .await
        .expect("create pool");
}

/// Serves `store` on a free port and returns a connected client.
pub async fn spawn(store: Budget) -> BudgetServiceClient<Channel> {
    let db = store.db().clone();
    let channel = subsidy_testkit::fakes::serve_alone(ServiceKind::Budget, Some(db), |config| {
        subsidy_budget::routes(store, config)
    })
    .await;
    BudgetServiceClient::new(channel)
}

/// Checks every invariant of one pool against the rows: the counters equal the sums over the
/// reservations, held + committed ≤ total, each beneficiary's usage equals its reservations'
/// sums and stays within the cap, and the ledger has one entry per state change.
pub async fn assert_invariants(db: &Db, pool_id: &str) {
    let violations = invariant_violations(db, pool_id).await;
    assert!(
        violations.is_empty(),
        "invariants violated: {violations:#?}"
    );
}

/// The invariants of [`assert_invariants`] that do not hold, described.
pub async fn invariant_violations(db: &Db, pool_id: &str) -> Vec<String> {
    let mut violations = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            violations.push(what);
        }
    };
    let pool = sqlx::query(
        "SELECT total_fen, held_fen, committed_fen, beneficiary_cap_fen, ledger_sequence, \
         CASE WHEN closed_us IS NULL THEN 0 ELSE 1 END AS closed FROM pools WHERE pool_id = $1",
    )
    .bind(pool_id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let total: i64 = pool.get("total_fen");
    let held: i64 = pool.get("held_fen");
    let committed: i64 = pool.get("committed_fen");
    let cap: Option<i64> = pool.get("beneficiary_cap_fen");
    let sequence: i64 = pool.get("ledger_sequence");
    let sums = sqlx::query(
        "SELECT CAST(COALESCE(SUM(CASE WHEN state = 'HELD' THEN held_fen ELSE 0 END), 0) AS BIGINT) AS held, \
         CAST(COALESCE(SUM(committed_fen), 0) AS BIGINT) AS committed, \
         CAST(COUNT(*) AS BIGINT) AS reservations, \
         CAST(COALESCE(SUM(CASE WHEN state = 'HELD' THEN 0 ELSE 1 END), 0) AS BIGINT) AS settled, \
         CAST(COALESCE(SUM(CASE WHEN state = 'REVOKED' THEN 1 ELSE 0 END), 0) AS BIGINT) AS revoked \
         FROM reservations WHERE pool_id = $1",
    )
    .bind(pool_id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let (held_sum, committed_sum): (i64, i64) = (sums.get("held"), sums.get("committed"));
    check(
        held == held_sum,
        format!("pool held {held} differs from the sum of HELD reservations {held_sum}"),
    );
    check(
        committed == committed_sum,
        format!("pool committed {committed} differs from the sum of commitments {committed_sum}"),
    );
    check(
        held + committed <= total,
        format!("held {held} + committed {committed} exceeds total {total}"),
    );
    // Creation, each hold, each settlement, each revocation, each extension (no row keeps
    // those: counted from the ledger) and the closing if the pool was closed.
    let closed: i64 = pool.get("closed");
    let extensions: i64 = sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM ledger_entries WHERE pool_id = $1 AND kind = 'EXTENDED'",
    )
    .bind(pool_id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let changes = 1
        + sums.get::<i64, _>("reservations")
        + sums.get::<i64, _>("settled")
        + sums.get::<i64, _>("revoked")
        + extensions
        + closed;
    let entries: i64 = sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM ledger_entries WHERE pool_id = $1",
    )
    .bind(pool_id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    check(
        entries == changes,
        format!("{entries} ledger entries for {changes} state changes"),
    );
    check(
        sequence == entries,
        format!("the pool's ledger head {sequence} does not count its {entries} entries"),
    );
    let usage = subsidy_testkit::query_rows(
        db,
        "SELECT u.beneficiary_uscc, u.held_fen, u.committed_fen, \
         CAST(COALESCE(SUM(CASE WHEN r.state = 'HELD' THEN r.held_fen ELSE 0 END), 0) AS BIGINT) AS held_sum, \
         CAST(COALESCE(SUM(r.committed_fen), 0) AS BIGINT) AS committed_sum \
         FROM beneficiary_usage u LEFT JOIN reservations r \
           ON r.pool_id = u.pool_id AND r.beneficiary_uscc = u.beneficiary_uscc \
         WHERE u.pool_id = $1 GROUP BY u.beneficiary_uscc, u.held_fen, u.committed_fen",
        &[pool_id],
    )
    .await;
    for row in usage {
        let who: String = row.get("beneficiary_uscc");
        let held: i64 = row.get("held_fen");
        let committed: i64 = row.get("committed_fen");
        let (held_sum, committed_sum): (i64, i64) = (row.get("held_sum"), row.get("committed_sum"));
        check(
            held == held_sum,
            format!("{who}: usage held {held} differs from its HELD reservations {held_sum}"),
        );
        check(
            committed == committed_sum,
            format!(
                "{who}: usage committed {committed} differs from its commitments {committed_sum}"
            ),
        );
        if let Some(cap) = cap {
            check(
                held + committed <= cap,
                format!("{who}: {held} + {committed} exceeds the cap {cap}"),
            );
        }
    }
    violations
}

// Counts rows of a table: the kit's; not every test binary uses it.
#[allow(unused_imports)]
pub use subsidy_testkit::count;
