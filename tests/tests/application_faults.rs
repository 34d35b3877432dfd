//! The application service with the real rules, budget and notification services when
//! something fails: a crash between reserve and record or between commit and record, a hold
//! left behind by a dead call, the budget down during a submission, the notification service
//! down for a while.

mod application_support;

use application_support::*;
use subsidy_application::faults;
use subsidy_common::config::ServiceKind;
use subsidy_proto::application as pb;
use subsidy_proto::budget as bpb;
use subsidy_proto::notification as npb;
use subsidy_proto::status::reason;
use subsidy_testkit::requests::*;
use subsidy_testkit::*;
use tonic::Code;

#[tokio::test]
async fn a_crash_between_reserve_and_record_converges_to_exactly_one_reservation() {
    // Proves that the derived request id makes the restarted service find the reservation the
    // dead one made instead of holding the money twice.
    let mut stack = subsidy_tests::spawn_with(quick_application(&[])).await;
    let mut app = stack.app().await;
    let buyer = shandong(11);
    register(&mut app, &buyer).await;
    let reached = faults::hang_after_reserve("CRASH-1");
    crash_at(&mut stack, reached, {
        let mut app = app.clone();
        let buyer = buyer.clone();
        async move {
            app.submit_claim(submit(
                "crash-1",
                &buyer,
                contract("CRASH-1", &seller(1), 100_000_000),
            ))
            .await
        }
    })
    .await;
    let mut app = stack.app().await;

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
    let reservations = stack.reservations(VOUCHER_POOL, &claim.claim_id).await;
    assert_eq!(
        reservations.len(),
        1,
        "exactly one reservation: {reservations:?}"
    );
    assert_eq!(reservations[0].reservation_id, claim.reservation_id);
    assert_eq!(fen_of(&stack.pool(VOUCHER_POOL).await.held), 5_000_000);

    // The client's retry gets the claim, and still nothing is held twice.
    let retried = submitted(
        &mut app,
        "crash-1",
        &buyer,
        contract("CRASH-1", &seller(1), 100_000_000),
    )
    .await;
    assert_eq!(retried.claim_id, claim.claim_id);
    assert_eq!(
        stack
            .reservations(VOUCHER_POOL, &claim.claim_id)
            .await
            .len(),
        1
    );
    assert_claims_consistent(&stack, VOUCHER_POOL).await;
    assert_ledger_intact(&stack).await;
    stack.shutdown().await;
}

#[tokio::test]
async fn a_crash_between_commit_and_record_is_finished_by_the_reconciler() {
    // Proves that an approval whose commit was made but not recorded is completed after a
    // restart, committed once, and that the reviewer's retry gets the approval.
    let mut stack = subsidy_tests::spawn_with(quick_application(&[])).await;
    let mut app = stack.app().await;
    let buyer = shandong(21);
    register(&mut app, &buyer).await;
    let claim = submitted(
        &mut app,
        "commit-1",
        &buyer,
        contract("COMMIT-1", &seller(1), 100_000_000),
    )
    .await;
    let reached = faults::hang_at(faults::Point::AfterCommit, "COMMIT-1");
    let request = approve("commit-a", &claim.claim_id, 60_000_000);
    crash_at(&mut stack, reached, {
        let app = app.clone();
        let request = request.clone();
        async move { approve_claim(&app, request).await }
    })
    .await;
    let app = stack.app().await;
    let approved = wait_claim_state(&app, &claim.claim_id, pb::ClaimState::Approved).await;
    assert_eq!(fen_of(&approved.approved_amount), 3_000_000);
    let retried = approve_claim(&app, request)
        .await
        .unwrap()
        .into_inner()
        .claim
        .unwrap();
    assert_eq!(retried, approved, "the retry gets the completed approval");
    let reservations = stack.reservations(VOUCHER_POOL, &claim.claim_id).await;
    assert_eq!(reservations.len(), 1);
    assert_eq!(fen_of(&reservations[0].committed_amount), 3_000_000);
    assert_claims_consistent(&stack, VOUCHER_POOL).await;
    stack.shutdown().await;
}

#[tokio::test]
async fn a_reservation_never_recorded_is_released_when_its_claim_was_withdrawn_meanwhile() {
    // Proves the reconciler's compensation: a hold made by a call that died before recording
    // it is found by its reference and released once the claim has moved on.
    let mut stack = subsidy_tests::spawn_with(quick_application(&[(
        "SUBSIDY_APPLICATION_RECONCILE_GRACE_MS",
        "3600000",
    )]))
    .await;
    let mut app = stack.app().await;
    let buyer = shandong(20);
    register(&mut app, &buyer).await;
    let reached = faults::hang_after_reserve("ORPHAN-1");
    crash_at(&mut stack, reached, {
        let mut app = app.clone();
        let buyer = buyer.clone();
        async move {
            app.submit_claim(submit(
                "orphan-1",
                &buyer,
                contract("ORPHAN-1", &seller(1), 100_000_000),
            ))
            .await
        }
    })
    .await;
    let mut app = stack.app().await;
    let claim_id = app
        .list_claims(pb::ListClaimsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .claims[0]
        .claim_id
        .clone();
    app.withdraw_claim(pb::WithdrawClaimRequest {
        request_id: "orphan-w".into(),
        claim_id: claim_id.clone(),
        reason: "filed twice".into(),
    })
    .await
    .unwrap();
    let orphan = stack.reservations(VOUCHER_POOL, &claim_id).await;
    assert_eq!(orphan.len(), 1);
    assert_eq!(
        orphan[0].state(),
        bpb::ReservationState::Held,
        "not yet found"
    );

    // Let the reconciler take over at once.
    stack.kill(ServiceKind::Application).await;
    stack
        .configs
        .get_mut(&ServiceKind::Application)
        .expect("the application's configuration")
        .tweak_section(|s: &mut subsidy_application::settings::Settings| {
            s.reconcile_grace_ms = 10;
        });
    stack.restart(ServiceKind::Application).await;
    eventually("the orphaned hold to be released", || {
        let stack = &stack;
        let claim_id = claim_id.clone();
        async move {
            let held = stack.reservations(VOUCHER_POOL, &claim_id).await;
            (held[0].state() == bpb::ReservationState::Released).then_some(())
        }
    })
    .await;
    let claim = get_claim(&mut stack.app().await, &claim_id).await;
    assert_eq!(claim.state(), pb::ClaimState::Withdrawn);
    assert_eq!(claim.reservation_id, "");
    assert_claims_consistent(&stack, VOUCHER_POOL).await;
    stack.shutdown().await;
}

#[tokio::test]
async fn budget_unavailable_during_submit_is_unavailable_then_the_retry_succeeds() {
    // Proves a clear UNAVAILABLE while the budget is down, the claim kept, and success on a
    // retry with the same request id (the reconciler is held off by a long grace period).
    let mut stack = subsidy_tests::spawn_with(quick_application(&[(
        "SUBSIDY_APPLICATION_RECONCILE_GRACE_MS",
        "3600000",
    )]))
    .await;
    let mut app = stack.app().await;
    let buyer = shandong(12);
    register(&mut app, &buyer).await;
    stack.stop(ServiceKind::Budget).await;
    let request = submit(
        "down-1",
        &buyer,
        contract("DOWN-1", &seller(1), 100_000_000),
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
        .submit_claim(request.clone())
        .await
        .unwrap()
        .into_inner()
        .claim
        .unwrap();
    assert_eq!(claim.claim_id, recorded[0].claim_id);
    assert_eq!(claim.state(), pb::ClaimState::PendingReview);
    assert_eq!(
        stack
            .reservations(VOUCHER_POOL, &claim.claim_id)
            .await
            .len(),
        1
    );
    let replay = app
        .submit_claim(request)
        .await
        .unwrap()
        .into_inner()
        .claim
        .unwrap();
    assert_eq!(replay, claim, "a replay returns the original response");
    assert_claims_consistent(&stack, VOUCHER_POOL).await;
    stack.shutdown().await;
}

#[tokio::test]
async fn events_of_a_notification_outage_are_all_delivered_when_it_returns() {
    // Proves the outbox: changes made while the notification service is down are delivered,
    // in order and none lost, once it is back.
    let mut stack = subsidy_tests::spawn_with(quick_application(&[])).await;
    let mut app = stack.app().await;
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
    approve_claim(
        &app,
        approve_rated("quiet-a", &claims[1], 20_000_000, pb::BenefitRating::High),
    )
    .await
    .unwrap();
    let db = stack.database(ServiceKind::Application).await;
    let written = count(&db, "outbox").await;
    // Two events per claim submitted, the rejection, the approval and its publication.
    assert_eq!(written, 3 * 2 + 3);
    assert_eq!(
        undelivered(&db).await,
        written,
        "every change waits in the outbox: nothing is delivered while it is down"
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
            npb::EventType::AwardPublished,
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
    let events = events_of(&stack, "").await;
    assert_eq!(events.len() as i64, written, "every event, none twice");
    let times: Vec<_> = events
        .iter()
        .map(|e| {
            let t = e.occur_time.unwrap();
            (t.seconds, t.nanos)
        })
        .collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "delivered in the order they happened");
    eventually("the outbox to drain", || async {
        (undelivered(&db).await == 0).then_some(())
    })
    .await;
    let dead: i64 =
        sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM outbox WHERE dead_lettered = 1")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(dead, 0, "the notification service accepted every event");
    let notification = stack.database(ServiceKind::Notification).await;
    assert_eq!(
        published_by(&notification, "PublishEvents").await,
        written,
        "the waiting events were published in batches (PublishEvents), not one call each"
    );

    // An event the notification service will never accept, waiting before a claim's events:
    // the batch holding it is refused whole, and its events go one at a time, the bad one
    // dead-lettered, the others delivered in order.
    let one_by_one = published_by(&notification, "PublishEvent").await;
    stack.stop(ServiceKind::Notification).await;
    let unacceptable = npb::Event {
        event_id: "evt-unacceptable".into(),
        r#type: npb::EventType::ClaimSubmitted as i32,
        application_id: "claim-unacceptable".into(),
        enterprise_uscc: buyer.to_string(),
        program: npb::Program::ComputeVoucher as i32,
        occur_time: None,
        source: "subsidy.application".into(),
        ..npb::Event::default()
    };
    sqlx::query("INSERT INTO outbox (event_id, event, created_us) VALUES ($1, $2, $3)")
        .bind("evt-unacceptable")
        .bind(prost::Message::encode_to_vec(&unacceptable))
        .bind(1_767_225_600_000_000_i64)
        .execute(&db.pool)
        .await
        .unwrap();
    let last = submitted(
        &mut app,
        "quiet-3",
        &buyer,
        contract("QUIET-3", &seller(1), 20_000_000),
    )
    .await
    .claim_id;
    stack.restart(ServiceKind::Notification).await;
    wait_events(
        &stack,
        &last,
        &[
            npb::EventType::ClaimSubmitted,
            npb::EventType::ClaimReserved,
        ],
    )
    .await;
    eventually("the outbox to drain again", || async {
        (undelivered(&db).await == 0).then_some(())
    })
    .await;
    let dead: Vec<(String, String)> =
        sqlx::query_as("SELECT event_id, last_error FROM outbox WHERE dead_lettered = 1")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0, "evt-unacceptable");
    assert!(dead[0].1.starts_with("InvalidArgument"), "{dead:?}");
    assert_eq!(events_of(&stack, "").await.len() as i64, written + 2);
    assert_eq!(
        published_by(&notification, "PublishEvents").await,
        written,
        "the refused batch stored nothing"
    );
    assert_eq!(
        published_by(&notification, "PublishEvent").await - one_by_one,
        2,
        "the rest of the refused batch went one event at a time"
    );
    stack.shutdown().await;
}

/// How many events the notification service's audit trail records as published by `rpc`.
async fn published_by(notification: &subsidy_common::db::Db, rpc: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM audit_log WHERE rpc = $1 AND outcome = 'OK'",
    )
    .bind(format!(
        "/subsidy.notification.v1.NotificationService/{rpc}"
    ))
    .fetch_one(&notification.pool)
    .await
    .expect("count the notification's audit records")
}
