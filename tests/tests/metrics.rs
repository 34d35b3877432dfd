//! The Prometheus scrape endpoint of every service (`GET /metrics` on its metrics port), read
//! as Prometheus reads it and parsed with a Prometheus text-format parser: the budget's pool
//! gauges hold the right amounts after a claim took money, the application's claim gauges
//! count it, and every service reports its RPCs and its database pool.

use std::collections::HashMap;

use subsidy_common::config::ServiceKind;
use subsidy_proto::application as pb;
use subsidy_testkit::requests::{contract, register, submitted, wait_claim_state};
use subsidy_testkit::scrape::{free_port, get, scrape, value};
use subsidy_testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scrape_endpoints_report_pools_claims_rpcs_and_database_pools() {
    let ports: HashMap<ServiceKind, u16> = ServiceKind::ALL
        .into_iter()
        .map(|kind| (kind, free_port()))
        .collect();
    let mut overrides = test_pool_application(&[]);
    for kind in ServiceKind::ALL {
        overrides.entry(kind).or_default().push((
            "SUBSIDY_METRICS_LISTEN".into(),
            format!("127.0.0.1:{}", ports[&kind]),
        ));
    }
    let stack = subsidy_tests::spawn_with(overrides).await;
    stack
        .create_test_pool(POOL_2025_FEN, LONG_HOLD_SECONDS)
        .await;
    let budget_port = ports[&ServiceKind::Budget];

    // Before any claim: the pool is whole.
    let samples = scrape(budget_port).await;
    let pool = |amount: &'static str| [("pool_id", TEST_POOL), ("amount", amount)];
    assert_eq!(
        value(&samples, "subsidy_budget_pool_amount", &pool("total")),
        Some(POOL_2025_FEN as f64)
    );
    assert_eq!(
        value(&samples, "subsidy_budget_pool_amount", &pool("available")),
        Some(POOL_2025_FEN as f64)
    );

    // A claim of 5% of 1,000,000.00: 50,000.00 held for it.
    let mut app = stack.app().await;
    let buyer = shandong(51);
    register(&mut app, &buyer).await;
    let claim = submitted(
        &mut app,
        "metrics-claim",
        &buyer,
        contract("METRICS-1", &seller(1), 100_000_000),
    )
    .await;
    wait_claim_state(&app, &claim.claim_id, pb::ClaimState::PendingReview).await;
    let held_fen = 5_000_000.0;

    let samples = scrape(budget_port).await;
    assert_eq!(
        value(&samples, "subsidy_budget_pool_amount", &pool("held")),
        Some(held_fen)
    );
    assert_eq!(
        value(&samples, "subsidy_budget_pool_amount", &pool("committed")),
        Some(0.0)
    );
    assert_eq!(
        value(&samples, "subsidy_budget_pool_amount", &pool("available")),
        Some(POOL_2025_FEN as f64 - held_fen)
    );
    assert_eq!(
        value(
            &samples,
            "subsidy_budget_reservations",
            &[("pool_id", TEST_POOL), ("state", "HELD")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "subsidy_budget_reservations",
            &[("pool_id", TEST_POOL), ("state", "COMMITTED")]
        ),
        Some(0.0),
        "every state is reported, zero included"
    );
    assert!(
        value(
            &samples,
            "rpc_server_duration_milliseconds_count",
            &[("rpc_method", "/subsidy.budget.v1.BudgetService/Reserve")]
        )
        .is_some_and(|count| count >= 1.0),
        "the Reserve call is counted"
    );

    let samples = scrape(ports[&ServiceKind::Application]).await;
    assert_eq!(
        value(
            &samples,
            "subsidy_application_claims",
            &[("state", "PENDING_REVIEW")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "subsidy_application_claims",
            &[("state", "WAITLISTED")]
        ),
        Some(0.0)
    );
    assert!(
        value(&samples, "subsidy_application_outbox_lag_seconds", &[]).is_some(),
        "the outbox lag is reported"
    );
    assert!(
        value(
            &samples,
            "rpc_server_duration_milliseconds_count",
            &[
                (
                    "rpc_method",
                    "/subsidy.application.v1.ApplicationService/SubmitClaim"
                ),
                ("rpc_grpc_status_code", "0")
            ]
        )
        .is_some_and(|count| count >= 1.0),
        "the SubmitClaim call is counted with its status"
    );

    for kind in ServiceKind::ALL {
        let samples = scrape(ports[&kind]).await;
        assert_eq!(
            value(&samples, "subsidy_db_connections_max", &[]),
            Some(8.0),
            "{}: the database pool's size limit (the stack sets 8)",
            kind.name()
        );
        assert!(
            value(&samples, "subsidy_db_connections", &[("state", "idle")]).is_some(),
            "{}: the database pool's connections",
            kind.name()
        );
    }
    let samples = scrape(ports[&ServiceKind::Notification]).await;
    assert_eq!(
        value(
            &samples,
            "subsidy_notification_deliveries",
            &[("channel", "WEBHOOK"), ("state", "DEAD_LETTERED")]
        ),
        Some(0.0)
    );

    let (status, _) = get(budget_port, "/").await;
    assert_eq!(status, 404, "only /metrics is served");
    stack.shutdown().await;
}
