//! `server.max_connection_age_ms`: the rules, budget and notification services close each of
//! the application's connections every 200 ms (GOAWAY, as the production overlay does every
//! few minutes so that connections spread over new replicas). The application's calls that
//! meet a closing connection are classified as "the peer was not there" and retried (by the
//! caller with its `request_id`, or by the reconciler), never taken for a refusal: every claim
//! is funded, once.

use std::time::Duration;

use subsidy_common::config::ServiceKind;
use subsidy_proto::application as pb;
use subsidy_testkit::requests::*;
use subsidy_testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_keep_closing_connections_cost_no_claim() {
    let mut overrides = test_pool_application(&[]);
    for kind in [
        ServiceKind::Rules,
        ServiceKind::Budget,
        ServiceKind::Notification,
    ] {
        overrides
            .entry(kind)
            .or_default()
            .push(("SUBSIDY_MAX_CONNECTION_AGE_MS".into(), "200".into()));
    }
    let stack = subsidy_tests::spawn_with(overrides).await;
    stack
        .create_test_pool(POOL_2025_FEN, LONG_HOLD_SECONDS)
        .await;
    let mut app = stack.app().await;
    let mut claims = Vec::new();
    let mut retried = 0;
    for n in 0..30 {
        let buyer = shandong(400 + n);
        register(&mut app, &buyer).await;
        let request = submit(
            &format!("age-{n}"),
            &buyer,
            contract(&format!("AGE-{n}"), &seller(1), 10_000_000),
        );
        let claim = loop {
            match app.submit_claim(request.clone()).await {
                Ok(answer) => break answer.into_inner().claim.expect("a claim"),
                Err(status) if status.code() == tonic::Code::Unavailable => {
                    retried += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(status) => panic!("claim {n}: {status:?}"),
            }
        };
        claims.push(claim.claim_id);
        // Let connections age between the calls.
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    for claim_id in &claims {
        wait_claim_state(&app, claim_id, pb::ClaimState::PendingReview).await;
    }
    eprintln!("30 claims, {retried} submissions retried after UNAVAILABLE");
    let pool = stack.pool(TEST_POOL).await;
    assert_eq!(pool.reservation_count, 30, "one reservation per claim");
    assert_eq!(fen_of(&pool.held), 30 * 500_000);
    stack.shutdown().await;
}
