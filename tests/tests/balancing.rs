//! Client-side balancing (`peers.resolve_interval_ms`): the application spreads its calls to
//! the budget over both budget replicas, call by call, not connection by connection. Counted
//! by each budget replica's own metrics.

use subsidy_common::config::ServiceKind;
use subsidy_proto::application as pb;
use subsidy_testkit::requests::*;
use subsidy_testkit::scrape::{free_port, scrape, value};
use subsidy_testkit::*;

/// Claims submitted: one Reserve each.
const CLAIMS: usize = 40;

/// The Reserve calls a budget replica served, from its metrics.
async fn reserves(port: u16) -> f64 {
    value(
        &scrape(port).await,
        "rpc_server_duration_milliseconds_count",
        &[("rpc_method", "/subsidy.budget.v1.BudgetService/Reserve")],
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_to_a_peer_are_spread_over_its_replicas() {
    let (primary_metrics, replica_metrics) = (free_port(), free_port());
    let mut overrides = test_pool_application(&[]);
    overrides.entry(ServiceKind::Budget).or_default().push((
        "SUBSIDY_METRICS_LISTEN".into(),
        format!("127.0.0.1:{primary_metrics}"),
    ));
    let mut stack = subsidy_tests::spawn_with(overrides).await;
    stack
        .create_test_pool(POOL_2025_FEN, LONG_HOLD_SECONDS)
        .await;
    let replica = stack
        .spawn_replica_with(ServiceKind::Budget, |config| {
            config.telemetry.metrics_listen = format!("127.0.0.1:{replica_metrics}");
        })
        .await;
    // The application now knows both budget replicas and balances over them.
    stack.stop(ServiceKind::Application).await;
    {
        let application = stack
            .configs
            .get_mut(&ServiceKind::Application)
            .expect("the application's configuration");
        application.peers.budget_url =
            format!("{},{}", stack.urls[&ServiceKind::Budget], replica.url);
        application.peers.resolve_interval_ms = 200;
        application.validate().expect("a valid configuration");
    }
    stack.restart(ServiceKind::Application).await;
    let (before_primary, before_replica) = (
        reserves(primary_metrics).await,
        reserves(replica_metrics).await,
    );

    let mut app = stack.app().await;
    for n in 0..CLAIMS {
        let buyer = shandong(700 + n);
        register(&mut app, &buyer).await;
        let claim = submitted(
            &mut app,
            &format!("balanced-{n}"),
            &buyer,
            contract(&format!("BALANCED-{n}"), &seller(1), 10_000_000),
        )
        .await;
        wait_claim_state(&app, &claim.claim_id, pb::ClaimState::PendingReview).await;
    }
    let primary = reserves(primary_metrics).await - before_primary;
    let second = reserves(replica_metrics).await - before_replica;
    eprintln!("Reserve calls: {primary} on the first budget replica, {second} on the second");
    assert!(
        primary + second >= CLAIMS as f64,
        "every claim reserved: {primary} + {second}"
    );
    let share = (CLAIMS as f64) / 5.0;
    assert!(
        primary >= share && second >= share,
        "both replicas took at least a fifth of the calls: {primary} and {second}"
    );
    let pool = stack.pool(TEST_POOL).await;
    assert_eq!(
        pool.reservation_count, CLAIMS as i64,
        "one reservation per claim"
    );
    replica.stop().await;
    stack.shutdown().await;
}
