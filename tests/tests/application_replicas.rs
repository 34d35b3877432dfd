//! Two replicas of the application service on one database, each running its own background
//! work (reconciler, outbox relay, waitlist promotion): both reconcilers finish a step a dead
//! replica left half-done, once; round finalisation started on both at once awards once; the outbox relays of both hand every event to the notification service in
//! order per application; money released on either replica funds the waitlist strictly in
//! acceptance order, each claim once. The replica is a second instance of the real service
//! with its own connections (in this process); on SQLite both share the file's lock, on
//! PostgreSQL the database's row locks.

mod application_support;

use std::collections::HashMap;

use application_support::{VOUCHER_POOL, assert_claims_consistent, assert_ledger_intact, crash_at};
use subsidy_application::faults;

use futures::future::join_all;
use subsidy_common::config::ServiceKind;
use subsidy_proto::application as pb;
use subsidy_testkit::requests::*;
use subsidy_testkit::rounds::*;
use subsidy_testkit::*;
use tonic_types::StatusExt;

/// The reason of a refusal.
fn reason(status: &tonic::Status) -> Option<String> {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn finalising_a_round_on_two_replicas_at_once_awards_once() {
    let stack = subsidy_tests::spawn_with(quick_application(&[])).await;
    let replica = stack.spawn_replica(ServiceKind::Application).await;
    // 15,000,000.00 for three requests of 10,000,000.00, 8,000,000.00 and 6,000,000.00.
    let (mut app, round) = open_round(&stack, 1_500_000_000).await;
    let expert_org = shandong(60);
    for (i, (requested, mark)) in [(1_000_000_000, 90), (800_000_000, 80), (600_000_000, 70)]
        .into_iter()
        .enumerate()
    {
        let who = shandong(10 + i);
        register(&mut app, &who).await;
        let proposal = propose(&mut app, &round.round_id, &who, &format!("p{i}"), requested).await;
        score(&mut app, &proposal.proposal_id, "e1", &expert_org, mark)
            .await
            .expect("score");
    }
    close(&mut app, &round.round_id).await;

    let mut other = replica.app().await;
    let (here, there) = tokio::join!(
        app.finalize_selection_round(finalize("final-here", &round.round_id)),
        other.finalize_selection_round(finalize("final-there", &round.round_id)),
    );
    // Whichever replica records its request first starts the finalisation; the other joins
    // it while it runs (and answers with the same awards), or finds it done.
    let won = match (here, there) {
        (Ok(first), Ok(second)) => {
            let (first, second) = (first.into_inner(), second.into_inner());
            assert_eq!(
                first.awards, second.awards,
                "the request that joined answers with the same awards"
            );
            first
        }
        (Ok(won), Err(lost)) | (Err(lost), Ok(won)) => {
            assert_eq!(
                reason(&lost).as_deref(),
                Some("ROUND_ALREADY_FINALIZED"),
                "{lost:?}"
            );
            won.into_inner()
        }
        (Err(here), Err(there)) => panic!("neither finalisation answered: {here:?} / {there:?}"),
    };
    let awarded: i64 = won
        .awards
        .iter()
        .map(|award| fen_of(&award.awarded_amount))
        .sum();
    assert_eq!(awarded, 1_500_000_000, "{:?}", won.awards);
    let pool = stack.pool(ROUND_POOL).await;
    assert_eq!(fen_of(&pool.committed), 1_500_000_000);
    assert_eq!(
        pool.reservation_count,
        won.awards.len() as i64,
        "one reservation per award: nothing awarded twice"
    );
    replica.stop().await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_replicas_relay_the_outbox_in_order_per_application() {
    let stack = subsidy_tests::spawn_with(test_pool_application(&[])).await;
    stack
        .create_test_pool(POOL_2025_FEN, LONG_HOLD_SECONDS)
        .await;
    let replica = stack.spawn_replica(ServiceKind::Application).await;
    let apps = [stack.app().await, replica.app().await];
    // Twelve claims, submitted and approved through both replicas in turn: each makes a
    // submitted, a reserved and an approved event, from either replica.
    let claims = join_all((0..12).map(|n| {
        let mut app = apps[n % 2].clone();
        let other = apps[(n + 1) % 2].clone();
        async move {
            let buyer = shandong(200 + n);
            register(&mut app, &buyer).await;
            let claim = submitted(
                &mut app,
                &format!("relay-{n}"),
                &buyer,
                contract(&format!("RELAY-{n}"), &seller(1), 10_000_000),
            )
            .await;
            wait_claim_state(&other, &claim.claim_id, pb::ClaimState::PendingReview).await;
            approve_claim(
                &other,
                approve(&format!("approve-relay-{n}"), &claim.claim_id, 10_000_000),
            )
            .await
            .expect("approve");
            claim.claim_id
        }
    }))
    .await;

    let application = stack.database(ServiceKind::Application).await;
    let notification = stack.database(ServiceKind::Notification).await;
    let outbox: Vec<(i64, String)> = eventually("the outbox relayed", || async {
        let rows: Vec<(i64, String, Option<i64>)> = sqlx::query_as(
            "SELECT outbox_seq, event_id, delivered_us FROM outbox ORDER BY outbox_seq",
        )
        .fetch_all(&application.pool)
        .await
        .expect("read the outbox");
        rows.iter()
            .all(|(_, _, delivered)| delivered.is_some())
            .then(|| rows.into_iter().map(|(seq, id, _)| (seq, id)).collect())
    })
    .await;
    let stored: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT seq, event_id, application_id FROM events ORDER BY seq")
            .fetch_all(&notification.pool)
            .await
            .expect("read the notification's events");
    let position: HashMap<&str, i64> = outbox.iter().map(|(seq, id)| (id.as_str(), *seq)).collect();
    assert_eq!(
        stored.len(),
        outbox.len(),
        "every outbox event stored once by the notification service"
    );
    for claim_id in &claims {
        let mut order: Vec<i64> = stored
            .iter()
            .filter(|(_, _, application_id)| application_id == claim_id)
            .map(|(_, event_id, _)| position[event_id.as_str()])
            .collect();
        assert!(order.len() >= 3, "{claim_id}: its events {order:?}");
        let published = order.clone();
        order.sort_unstable();
        assert_eq!(
            published, order,
            "{claim_id}: the notification service stored its events in outbox order"
        );
    }
    replica.stop().await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn money_released_on_either_replica_funds_the_waitlist_in_acceptance_order_once() {
    // Each claim is entitled to 5% of 1,000,000.00 = 50,000.00; the pool holds two.
    let stack = subsidy_tests::spawn_with(test_pool_application(&[])).await;
    stack.create_test_pool(10_000_000, LONG_HOLD_SECONDS).await;
    let replica = stack.spawn_replica(ServiceKind::Application).await;
    let apps = [stack.app().await, replica.app().await];
    let mut claims = Vec::new();
    for n in 0..6 {
        let mut app = apps[n % 2].clone();
        let buyer = shandong(300 + n);
        register(&mut app, &buyer).await;
        let claim = submitted(
            &mut app,
            &format!("line-{n}"),
            &buyer,
            contract(&format!("LINE-{n}"), &seller(1), 100_000_000),
        )
        .await;
        let expected = if n < 2 {
            pb::ClaimState::PendingReview
        } else {
            pb::ClaimState::Waitlisted
        };
        wait_claim_state(&app, &claim.claim_id, expected).await;
        claims.push(claim.claim_id);
    }
    // Reject the funded claims one per replica, then the next funded ones, and so on: each
    // release funds the head of the line, whichever replica released it.
    for step in 0..2 {
        for (i, claim_id) in claims[step * 2..step * 2 + 2].iter().enumerate() {
            let mut app = apps[i].clone();
            app.reject_claim(reject(&format!("reject-{claim_id}"), claim_id))
                .await
                .expect("reject");
        }
        for (offset, claim_id) in claims.iter().enumerate().skip(step * 2 + 2) {
            let expected = if offset < step * 2 + 4 {
                pb::ClaimState::PendingReview
            } else {
                pb::ClaimState::Waitlisted
            };
            wait_claim_state(&apps[0], claim_id, expected).await;
        }
    }
    let db = stack.database(ServiceKind::Application).await;
    let states: Vec<(i64, String)> =
        sqlx::query_as("SELECT accept_seq, state FROM claims ORDER BY accept_seq")
            .fetch_all(&db.pool)
            .await
            .expect("read the line");
    let states: Vec<&str> = states.iter().map(|(_, state)| state.as_str()).collect();
    assert_eq!(
        states,
        [
            "REJECTED",
            "REJECTED",
            "REJECTED",
            "REJECTED",
            "PENDING_REVIEW",
            "PENDING_REVIEW"
        ]
    );
    let pool = stack.pool(TEST_POOL).await;
    assert_eq!(
        fen_of(&pool.held),
        10_000_000,
        "exactly the two funded claims hold money"
    );
    assert_eq!(
        pool.reservation_count, 6,
        "one reservation per funded claim"
    );
    replica.stop().await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_reconcilers_finish_what_a_dead_replica_left_half_done_once() {
    // One replica dies right after the budget made a claim's reservation (not recorded), and
    // another after the budget committed an approval (not recorded); it is restarted, so two
    // reconcilers find each half-done step at once: one reservation each, committed once.
    let mut stack = subsidy_tests::spawn_with(quick_application(&[])).await;
    let replica = stack.spawn_replica(ServiceKind::Application).await;
    let mut app = stack.app().await;
    let (first, second) = (shandong(600), shandong(601));
    register(&mut app, &first).await;
    register(&mut app, &second).await;

    let reached = faults::hang_after_reserve("RECONCILE-1");
    crash_at(&mut stack, reached, {
        let mut app = app.clone();
        let first = first.clone();
        async move {
            app.submit_claim(submit(
                "reconcile-1",
                &first,
                contract("RECONCILE-1", &seller(1), 100_000_000),
            ))
            .await
        }
    })
    .await;
    let other = replica.app().await;
    let reserved = submitted(
        &mut other.clone(),
        "reconcile-1",
        &first,
        contract("RECONCILE-1", &seller(1), 100_000_000),
    )
    .await;
    wait_claim_state(&other, &reserved.claim_id, pb::ClaimState::PendingReview).await;
    assert_eq!(
        stack
            .reservations(VOUCHER_POOL, &reserved.claim_id)
            .await
            .len(),
        1,
        "one reservation for the half-done claim"
    );

    let mut app = stack.app().await;
    let claim = submitted(
        &mut app,
        "reconcile-2",
        &second,
        contract("RECONCILE-2", &seller(1), 100_000_000),
    )
    .await;
    wait_claim_state(&app, &claim.claim_id, pb::ClaimState::PendingReview).await;
    let reached = faults::hang_at(faults::Point::AfterCommit, "RECONCILE-2");
    let request = approve("reconcile-approve", &claim.claim_id, 60_000_000);
    crash_at(&mut stack, reached, {
        let app = app.clone();
        let request = request.clone();
        async move { approve_claim(&app, request).await }
    })
    .await;
    let approved = wait_claim_state(&other, &claim.claim_id, pb::ClaimState::Approved).await;
    assert_eq!(fen_of(&approved.approved_amount), 3_000_000);
    let reservations = stack.reservations(VOUCHER_POOL, &claim.claim_id).await;
    assert_eq!(reservations.len(), 1);
    assert_eq!(
        fen_of(&reservations[0].committed_amount),
        3_000_000,
        "committed once"
    );
    assert_claims_consistent(&stack, VOUCHER_POOL).await;
    assert_ledger_intact(&stack).await;
    replica.stop().await;
    stack.shutdown().await;
}
