//! The application service with the real rules, budget and notification services when
//! something fails: a crash between reserve and record, the budget down during a submission,
//! the notification service down for a while.

mod application_support;

use std::time::Duration;

use application_support::*;
use subsidy_common::config::ServiceKind;
use subsidy_proto::application as pb;
use subsidy_proto::notification as npb;
use subsidy_proto::status::reason;
use tonic::Code;

#[tokio::test]
async fn a_crash_between_reserve_and_record_leaves_exactly_one_reservation_after_restart() {
    // Proves that the restarted service finds the reservation the crashed one made (same
    // derived request id) and records it, instead of holding the money twice.
    let mut stack = subsidy_tests::spawn_with(quick_application(&[])).await;
    let mut app = app(&stack).await;
    let buyer = shandong(40);
    register(&mut app, &buyer).await;
    let reached = subsidy_application::faults::hang_after_reserve("CRASH-E2E");
    let call = tokio::spawn({
        let mut app = app.clone();
        let buyer = buyer.clone();
        async move {
            app.submit_claim(submit(
                "crash-e2e",
                &buyer,
                contract("CRASH-E2E", &seller(1), 100_000_000),
            ))
            .await
        }
    });
    tokio::time::timeout(Duration::from_millis(WAIT_MS_MAX), reached.notified())
        .await
        .expect("the budget made the reservation");
    stack.kill(ServiceKind::Application).await;
    call.abort();
    stack.restart(ServiceKind::Application).await;

    let mut app = application_support::app(&stack).await;
    let claims = app
        .list_claims(pb::ListClaimsRequest {
            enterprise_uscc: buyer.to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .claims;
    assert_eq!(claims.len(), 1);
    let claim = wait_claim_state(&app, &claims[0].claim_id, pb::ClaimState::PendingReview).await;
    let made = reservations(&stack, VOUCHER_POOL, &claim.claim_id).await;
    assert_eq!(made.len(), 1, "exactly one reservation: {made:?}");
    assert_eq!(made[0].reservation_id, claim.reservation_id);
    let retried = submitted(
        &mut app,
        "crash-e2e",
        &buyer,
        contract("CRASH-E2E", &seller(1), 100_000_000),
    )
    .await;
    assert_eq!(retried.claim_id, claim.claim_id);
    assert_eq!(
        reservations(&stack, VOUCHER_POOL, &claim.claim_id)
            .await
            .len(),
        1
    );
    assert_ledger_intact(&stack).await;
    stack.shutdown().await;
}

#[tokio::test]
async fn budget_unavailable_during_submit_answers_unavailable_then_the_retry_succeeds() {
    // Proves a clear UNAVAILABLE while the budget is down, the claim kept as SUBMITTED, and
    // success on a retry with the same request id once it is back (the reconciler is held
    // off so that the retry does the work).
    let mut stack = subsidy_tests::spawn_with(quick_application(&[(
        "SUBSIDY_APPLICATION_RECONCILE_GRACE_MS",
        "3600000",
    )]))
    .await;
    let mut app = app(&stack).await;
    let buyer = shandong(41);
    register(&mut app, &buyer).await;
    stack.stop(ServiceKind::Budget).await;
    let request = submit(
        "budget-down",
        &buyer,
        contract("DOWN-E2E", &seller(1), 100_000_000),
    );
    let status = app.submit_claim(request.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(reason(&status).as_deref(), Some("UPSTREAM_UNAVAILABLE"));
    let recorded = app
        .list_claims(pb::ListClaimsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .claims;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].state(), pb::ClaimState::Submitted);

    stack.restart(ServiceKind::Budget).await;
    let claim = app
        .submit_claim(request)
        .await
        .unwrap()
        .into_inner()
        .claim
        .unwrap();
    assert_eq!(claim.claim_id, recorded[0].claim_id);
    assert_eq!(claim.state(), pb::ClaimState::PendingReview);
    assert_eq!(
        reservations(&stack, VOUCHER_POOL, &claim.claim_id)
            .await
            .len(),
        1
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn events_of_a_notification_outage_are_all_delivered_when_it_returns() {
    // Proves the outbox: changes made while the notification service is down are delivered,
    // in order and none lost, once it is back.
    let mut stack = subsidy_tests::spawn_with(quick_application(&[])).await;
    let mut app = app(&stack).await;
    let buyer = shandong(42);
    register(&mut app, &buyer).await;
    stack.stop(ServiceKind::Notification).await;
    let mut claims = Vec::new();
    for i in 0..3 {
        claims.push(
            submitted(
                &mut app,
                &format!("quiet-{i}"),
                &buyer,
                contract(&format!("QUIET-{i}"), &seller(1), 20_000_000),
            )
            .await
            .claim_id,
        );
    }
    app.reject_claim(reject("quiet-r", &claims[0]))
        .await
        .unwrap();
    app.approve_claim(approve("quiet-a", &claims[1], 20_000_000))
        .await
        .unwrap();
    let db = application_db(&stack).await;
    let undelivered = || {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT CAST(COUNT(*) AS BIGINT) FROM outbox WHERE delivered_us IS NULL",
            )
            .fetch_one(&db.pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(
        undelivered().await,
        3 * 2 + 2,
        "every change waits in the outbox"
    );

    stack.restart(ServiceKind::Notification).await;
    wait_events(
        &stack,
        &claims[0],
        &[
            npb::EventType::ClaimSubmitted,
            npb::EventType::ClaimReserved,
            npb::EventType::ClaimRejected,
        ],
    )
    .await;
    wait_events(
        &stack,
        &claims[1],
        &[
            npb::EventType::ClaimSubmitted,
            npb::EventType::ClaimReserved,
            npb::EventType::ClaimApproved,
        ],
    )
    .await;
    wait_events(
        &stack,
        &claims[2],
        &[
            npb::EventType::ClaimSubmitted,
            npb::EventType::ClaimReserved,
        ],
    )
    .await;
    eventually("the outbox to drain", || async {
        (undelivered().await == 0).then_some(())
    })
    .await;
    let dead: i64 =
        sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM outbox WHERE dead_lettered = 1")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(dead, 0, "the notification service accepted every event");
    stack.shutdown().await;
}
