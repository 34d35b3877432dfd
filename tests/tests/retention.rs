//! Bounded storage across the services, as they run (on PostgreSQL as the runtime role): the
//! idempotency records of requests older than `database.request_retention_ms` are pruned, and
//! the application's progress rows of those completed requests with them; newer records stay,
//! and so does every record of what happened (enterprises, claims, history, reservations, the
//! ledger, policies, the audit trails).

use std::time::Duration;

use subsidy_common::config::ServiceKind;
use subsidy_common::db::Db;
use subsidy_proto::application as pb;
use subsidy_testkit::requests::*;
use subsidy_testkit::*;

/// The replay window of this test.
const RETENTION_MS: u64 = 2_000;

async fn count(db: &Db, sql: &'static str, bind: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(bind.to_owned())
        .fetch_one(&db.pool)
        .await
        .expect("count rows")
}

/// Rows whose key holds `request_id`: `SELECT … WHERE request_id LIKE 'id %'` (keys are
/// scoped by caller).
fn like(request_id: &str) -> String {
    format!("{request_id} %")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_older_than_the_replay_window_are_forgotten_and_records_stay() {
    let mut overrides = test_pool_application(&[]);
    for kind in ServiceKind::ALL {
        overrides.entry(kind).or_default().extend([
            (
                "SUBSIDY_REQUEST_RETENTION_MS".to_owned(),
                RETENTION_MS.to_string(),
            ),
            ("SUBSIDY_PRUNE_INTERVAL_MS".to_owned(), "100".to_owned()),
        ]);
    }
    let stack = subsidy_tests::spawn_with(overrides).await;
    stack
        .create_test_pool(POOL_2025_FEN, LONG_HOLD_SECONDS)
        .await;
    let mut app = stack.app().await;
    let old = shandong(500);
    register(&mut app, &old).await;
    let claim = submitted(
        &mut app,
        "retention-old",
        &old,
        contract("RETENTION-1", &seller(1), 100_000_000),
    )
    .await;
    wait_claim_state(&app, &claim.claim_id, pb::ClaimState::PendingReview).await;
    let application = stack.database(ServiceKind::Application).await;
    let budget = stack.database(ServiceKind::Budget).await;
    let count_keys =
        "SELECT CAST(COUNT(*) AS BIGINT) FROM idempotency_keys WHERE request_id LIKE $1";
    let count_progress =
        "SELECT CAST(COUNT(*) AS BIGINT) FROM request_progress WHERE request_id LIKE $1";
    assert_eq!(
        count(&application, count_keys, &like("retention-old")).await,
        1
    );
    assert_eq!(
        count(&application, count_progress, &like("retention-old")).await,
        1
    );
    let budget_keys: i64 =
        sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM idempotency_keys")
            .fetch_one(&budget.pool)
            .await
            .unwrap();
    assert!(
        budget_keys >= 2,
        "the pool and the reservation were requested"
    );

    tokio::time::sleep(Duration::from_millis(RETENTION_MS + 200)).await;
    let new = shandong(501);
    register(&mut app, &new).await;

    eventually("the old requests forgotten", || async {
        let keys = count(&application, count_keys, &like("retention-old")).await;
        let progress = count(&application, count_progress, &like("retention-old")).await;
        (keys == 0 && progress == 0).then_some(())
    })
    .await;
    eventually("the budget's old requests forgotten", || async {
        let keys: i64 = sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM idempotency_keys")
            .fetch_one(&budget.pool)
            .await
            .unwrap();
        (keys == 0).then_some(())
    })
    .await;
    assert_eq!(
        count(&application, count_keys, &like(&format!("register-{new}"))).await,
        1,
        "a request within the window is remembered"
    );
    // What happened stays.
    let got = get_claim(&mut app, &claim.claim_id).await;
    assert_eq!(got.state(), pb::ClaimState::PendingReview);
    assert!(!history(&mut app, &claim.claim_id).await.is_empty());
    let pool = stack.pool(TEST_POOL).await;
    assert_eq!(pool.reservation_count, 1);
    let ledger: i64 = sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM ledger_entries")
        .fetch_one(&budget.pool)
        .await
        .unwrap();
    assert!(ledger >= 1, "the ledger is never pruned");
    stack.shutdown().await;
}
