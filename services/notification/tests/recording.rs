//! Recording attempts with group commit (issue #12): outcomes of attempts finishing together
//! are recorded in fewer transactions than attempts, each exactly as on its own; an outcome the
//! database refuses fails only itself; a worker with nothing due begins no write transaction.

mod support;

use std::time::Duration;

use serde_json::Map;
use subsidy_common::db::{Db, testing};
use subsidy_notification::Store;
use subsidy_notification::domain::delivery::{Channel, DeliveryState, Next, Outcome, RetryPolicy};
use subsidy_notification::domain::event::{EmailAddress, Event, EventId, EventType, Program};
use subsidy_notification::domain::subscription::{
    EndpointUrl, Filters, NewSubscription, SigningSecret,
};
use subsidy_notification::ops::Ops;
use subsidy_notification::ops::attempts::{ClaimLimits, Recorded};
use subsidy_notification::storage::Claimed;
use subsidy_notification::stream::Hub;
use support::*;

/// Use cases over a fresh, migrated database whose first attempts are due at once; and a
/// connection to inspect it.
async fn fresh_ops(label: &str) -> (Ops, Store, Db, String) {
    let url = fresh_db(label).await;
    let config = config(&url, |_| {});
    subsidy_notification::migrate(&config)
        .await
        .expect("migrate");
    let store = subsidy_notification::open_store(&config)
        .await
        .expect("open the store");
    let ops = Ops::new(
        store.clone(),
        Hub::default(),
        RetryPolicy::new(vec![0, 100], 0),
    );
    (ops, store, inspect(&url).await, url)
}

/// Stores an ACTIVE subscription receiving every event; its id.
async fn subscription(store: &Store) -> String {
    let new = NewSubscription {
        endpoint_url: EndpointUrl::parse("http://127.0.0.1:9/hook", true).unwrap(),
        filters: Filters::default(),
        description: "test agency".into(),
        max_in_flight: 0,
        contact_email: None,
    };
    let mut tx = store.db().begin_write().await.unwrap();
    let row = store
        .insert_subscription(&mut tx, &new, &SigningSecret::generate(&mut rand::rng()))
        .await
        .expect("store a subscription");
    tx.commit().await.unwrap();
    row.subscription_id
}

/// A claim approval of its own application (so that no order key holds it back), emailed to
/// the applicant when `emailed`.
fn approval(index: usize, emailed: bool) -> Event {
    Event {
        event_id: EventId::parse(&format!("evt-{index}")).unwrap(),
        event_type: EventType::ClaimApproved,
        application_id: format!("app-{index}"),
        enterprise_uscc: None,
        program: Some(Program::ComputeVoucher),
        amount: None,
        occur_us: 1_767_225_600_000_000,
        traceparent: String::new(),
        tracestate: String::new(),
        payload: Map::new(),
        language: None,
        recipient_email: emailed.then(|| EmailAddress::parse("boss@example.org").unwrap()),
        round_id: String::new(),
        source: "subsidy.application".into(),
    }
}

/// Claims every due delivery.
async fn claim_all(ops: &Ops) -> Vec<Claimed> {
    ops.claim_due(&ClaimLimits {
        deliveries_max: 500,
        emails_max: 500,
        max_in_flight_default: 64,
        webhook_lease_ms: 60_000,
        email_lease_ms: 60_000,
    })
    .await
    .expect("claim")
}

/// The subscription of a claimed delivery (empty for email).
async fn subscription_of(ops: &Ops, claim: &Claimed) -> String {
    let work = ops
        .attempt_work(claim)
        .await
        .unwrap()
        .expect("the claim holds");
    work.delivery.subscription_id
}

/// A delivery's state and attempt count as stored.
async fn stored(db: &Db, delivery_id: &str) -> (String, i64) {
    let row = subsidy_testkit::query_rows(
        db,
        "SELECT state, attempt_count FROM deliveries WHERE delivery_id = $1",
        &[delivery_id],
    )
    .await;
    use sqlx::Row;
    (row[0].get("state"), row[0].get("attempt_count"))
}

/// The attempts logged for a delivery: (number, HTTP status, SMTP code, succeeded).
async fn logged(db: &Db, delivery_id: &str) -> Vec<(i64, i64, i64, i64)> {
    use sqlx::Row;
    subsidy_testkit::query_rows(
        db,
        "SELECT attempt_number, http_status_code, smtp_reply_code, succeeded \
         FROM delivery_attempts WHERE delivery_id = $1 ORDER BY attempt_number",
        &[delivery_id],
    )
    .await
    .iter()
    .map(|row| {
        (
            row.get("attempt_number"),
            row.get("http_status_code"),
            row.get("smtp_reply_code"),
            row.get("succeeded"),
        )
    })
    .collect()
}

#[tokio::test]
async fn outcomes_finishing_together_share_transactions_and_each_is_recorded_as_its_own() {
    // Proves that 36 attempts finishing at once (two webhook subscriptions and an email for
    // each of 12 events) are recorded in at most two transactions, and that each outcome is
    // recorded exactly as alone: the first subscription's deliveries DELIVERED, the second's
    // failures FAILED_RETRYING or DEAD_LETTERED as their policy said, making it a disable
    // candidate, the emails DELIVERED; one attempt logged each, with its code in the HTTP or
    // SMTP column; the in-flight counters back to zero and only the failing endpoint failing.
    let (ops, store, db, _) = fresh_ops("notify_group_record").await;
    let healthy = subscription(&store).await;
    let failing = subscription(&store).await;
    for index in 0..12 {
        ops.publish(&approval(index, true), None)
            .await
            .expect("publish");
    }
    let claims = claim_all(&ops).await;
    assert_eq!(claims.len(), 36, "two webhooks and an email per event");
    let mut planned = Vec::new();
    for (index, claim) in claims.iter().enumerate() {
        let subscription_id = subscription_of(&ops, claim).await;
        let (outcome, next, expected) = if subscription_id == failing {
            if index % 2 == 0 {
                let outcome = Outcome::transient(503, "HTTP 503");
                (
                    outcome,
                    Next::RetryAfterMs(60_000),
                    DeliveryState::FailedRetrying,
                )
            } else {
                let outcome = Outcome::Failed {
                    status_code: 410,
                    error: "HTTP 410".into(),
                    permanent: true,
                };
                (outcome, Next::DeadLetter, DeliveryState::DeadLettered)
            }
        } else {
            let code = if claim.channel == Channel::Email {
                250
            } else {
                200
            };
            let outcome = Outcome::Succeeded { status_code: code };
            (outcome, Next::Delivered, DeliveryState::Delivered)
        };
        planned.push((claim.clone(), subscription_id, outcome, next, expected));
    }
    let before = ops.recording_transactions();
    let recorded: Vec<Recorded> =
        futures::future::join_all(planned.iter().map(|(claim, _, outcome, next, _)| async {
            ops.record_attempt(claim, 7, outcome, *next, 0)
                .await
                .expect("recorded")
        }))
        .await;
    let transactions = ops.recording_transactions() - before;
    assert!(
        (1..=2).contains(&transactions),
        "36 outcomes recorded in {transactions} transactions"
    );
    for ((claim, subscription_id, outcome, _, expected), recorded) in planned.iter().zip(&recorded)
    {
        assert_eq!(recorded.state, *expected, "{}", claim.delivery_id);
        let candidate = (subscription_id == &failing).then(|| failing.clone());
        assert_eq!(
            recorded.disable_candidate, candidate,
            "{}",
            claim.delivery_id
        );
        let (state, attempts) = stored(&db, &claim.delivery_id).await;
        assert_eq!(state, expected.as_str());
        assert_eq!(attempts, 1);
        let status = match outcome {
            Outcome::Succeeded { status_code } | Outcome::Failed { status_code, .. } => {
                *status_code
            }
        };
        let (http, smtp) = match claim.channel {
            Channel::Webhook => (status, 0),
            Channel::Email => (0, status),
        };
        let succeeded = i64::from(outcome.succeeded());
        assert_eq!(
            logged(&db, &claim.delivery_id).await,
            vec![(1, http, smtp, succeeded)]
        );
    }
    assert_in_flight_counters(&db).await;
    let failing_since = |subscription_id: String| {
        let db = &db;
        async move {
            let rows = subsidy_testkit::query_rows(
                db,
                "SELECT failing_since_us FROM subscriptions WHERE subscription_id = $1",
                &[subscription_id.as_str()],
            )
            .await;
            use sqlx::Row;
            rows[0].get::<Option<i64>, _>("failing_since_us")
        }
    };
    assert!(failing_since(healthy).await.is_none());
    assert!(failing_since(failing).await.is_some());
}

#[tokio::test]
async fn an_outcome_the_database_refuses_fails_only_itself_and_succeeds_when_tried_again() {
    // Proves that when one outcome of a batch cannot be written (its attempt's log row is
    // already taken), the others are still recorded, each with its own result, while that one
    // fails and leaves its delivery IN_FLIGHT under its claim, holding its slot; tried again
    // once the obstacle is gone (as the worker's retries do), it is recorded.
    let (ops, store, db, _) = fresh_ops("notify_poisoned_record").await;
    subscription(&store).await;
    for index in 0..8 {
        ops.publish(&approval(index, false), None)
            .await
            .expect("publish");
    }
    let claims = claim_all(&ops).await;
    assert_eq!(claims.len(), 8);
    let poisoned = &claims[3];
    sqlx::query(
        "INSERT INTO delivery_attempts (delivery_id, attempt_number, start_us, latency_ms, \
         http_status_code, smtp_reply_code, succeeded, error) VALUES ($1, 1, 0, 0, 0, 0, 0, 'planted')",
    )
    .bind(&poisoned.delivery_id)
    .execute(&db.pool)
    .await
    .expect("plant a conflicting attempt row");
    let delivered = Outcome::Succeeded { status_code: 200 };
    let results = futures::future::join_all(
        claims
            .iter()
            .map(|claim| ops.record_attempt(claim, 5, &delivered, Next::Delivered, 60_000)),
    )
    .await;
    for (claim, result) in claims.iter().zip(&results) {
        if claim == poisoned {
            assert!(result.is_err(), "the refused outcome fails");
            assert_eq!(
                stored(&db, &claim.delivery_id).await,
                ("IN_FLIGHT".into(), 0)
            );
        } else {
            let recorded = result.as_ref().expect("the others are recorded");
            assert_eq!(recorded.state, DeliveryState::Delivered);
            assert_eq!(
                stored(&db, &claim.delivery_id).await,
                ("DELIVERED".into(), 1)
            );
            assert_eq!(logged(&db, &claim.delivery_id).await, vec![(1, 200, 0, 1)]);
        }
    }
    assert_in_flight_counters(&db).await;

    sqlx::query("DELETE FROM delivery_attempts WHERE error = 'planted'")
        .execute(&db.pool)
        .await
        .unwrap();
    let recorded = ops
        .record_attempt(poisoned, 5, &delivered, Next::Delivered, 60_000)
        .await
        .expect("recorded when tried again");
    assert_eq!(recorded.state, DeliveryState::Delivered);
    assert_eq!(
        logged(&db, &poisoned.delivery_id).await,
        vec![(1, 200, 0, 1)]
    );
    assert_in_flight_counters(&db).await;
}

#[tokio::test]
async fn a_worker_with_nothing_due_begins_no_write_transaction() {
    // Proves that looking for due deliveries when none is due takes no write transaction: it
    // answers at once while the database refuses every write transaction (SQLite: another
    // connection holds the write lock; PostgreSQL: the database makes every transaction read
    // only); and that a due delivery is still claimed, once, by one of two claimers.
    let (ops, store, db, url) = fresh_ops("notify_idle_claim").await;
    subscription(&store).await;
    let nothing_claimed_at_once = |ops: Ops| async move {
        let claimed = tokio::time::timeout(Duration::from_secs(5), claim_all(&ops))
            .await
            .expect("answered without waiting for a write transaction");
        assert!(claimed.is_empty());
    };
    if testing::test_backend().is_some() {
        let name = url.rsplit('/').next().unwrap();
        let read_only = |on: &'static str| {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ALTER DATABASE \"{name}\" SET default_transaction_read_only = {on}"
            )))
        };
        read_only("on").execute(&db.pool).await.unwrap();
        // Its connections are opened now, read only: a write transaction would fail.
        let store = Store::new(inspect(&url).await);
        nothing_claimed_at_once(Ops::new(
            store,
            Hub::default(),
            RetryPolicy::new(vec![0], 0),
        ))
        .await;
        read_only("off").execute(&db.pool).await.unwrap();
    } else {
        let lock = db.pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
        nothing_claimed_at_once(ops.clone()).await;
        drop(lock);
    }
    ops.publish(&approval(1, false), None)
        .await
        .expect("publish");
    let (first, second) = tokio::join!(claim_all(&ops), claim_all(&ops));
    assert_eq!(first.len() + second.len(), 1, "claimed once");
}
