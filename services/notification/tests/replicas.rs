//! Two replicas of the notification service on one PostgreSQL database, each with its own
//! delivery worker: the database's leases coordinate them. Each event is delivered once, in
//! order per application, within the subscription's in-flight limit; a replica that dies
//! mid-delivery has its lease taken over by the other only once the lease has run out.
//! PostgreSQL only: SQLite is one process's database (the same code path runs there).

mod support;

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use subsidy_proto::notification as pb;
use support::*;

/// The database URL for a two-replica test, or `None` on SQLite.
async fn postgres_db(label: &str) -> Option<String> {
    if subsidy_common::db::testing::test_backend().is_none() {
        eprintln!(
            "runs in the PostgreSQL pass: set SUBSIDY_TEST_DATABASE=postgres://… (scripts/test does)"
        );
        return None;
    }
    Some(fresh_db(label).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_deliver_each_event_once_in_order_within_the_limit() {
    let Some(db) = postgres_db("notify_replicas").await else {
        return;
    };
    // A slow endpoint, so that both workers have deliveries in flight at once.
    let receiver = Receiver::start(&[], 200).await;
    receiver.hold(Some(Duration::from_millis(100)));
    let first = Service::start(config(&db, |_| {})).await;
    let second = Service::start(config(&db, |_| {})).await;
    let mut clients = [first.client.clone(), second.client.clone()];
    // Two at a time for three applications: the limit binds across the replicas.
    let (subscription, _) = subscribe(&mut clients[0], &receiver.url, |request| {
        request.max_in_flight = 2;
    })
    .await;
    assert_eq!(subscription.max_in_flight, 2);

    // Three applications, ten events each, published through both replicas in turn.
    let mut published: HashMap<String, Vec<String>> = HashMap::new();
    for i in 0..30 {
        let application = format!("app-{}", i % 3);
        let event_id = format!("rep-{i:02}");
        publish(
            &mut clients[i % 2],
            event(&event_id, pb::EventType::ClaimSubmitted, &application),
        )
        .await;
        published.entry(application).or_default().push(event_id);
    }
    for events in published.values() {
        for event_id in events {
            delivery_in_state(
                &mut clients[0],
                event_id,
                pb::Channel::Webhook,
                pb::DeliveryState::Delivered,
            )
            .await;
        }
    }

    let requests = receiver.requests();
    let mut ids: Vec<String> = requests
        .iter()
        .map(|r| r.headers["webhook-id"].clone())
        .collect();
    assert_eq!(ids.len(), 30, "each event sent once: {ids:?}");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 30, "no event sent twice");
    for (application, events) in &published {
        let received: Vec<String> = requests
            .iter()
            .map(|r| r.headers["webhook-id"].clone())
            .filter(|id| events.contains(id))
            .collect();
        assert_eq!(
            &received, events,
            "{application}: delivered in publication order"
        );
    }
    assert!(
        receiver.max_in_flight() >= 2,
        "the workers had deliveries in flight at once"
    );
    assert!(
        receiver.max_in_flight() as i64 <= i64::from(subscription.max_in_flight),
        "at most {} in flight across both replicas, saw {}",
        subscription.max_in_flight,
        receiver.max_in_flight()
    );
    assert_in_flight_counters(&inspect(&db).await).await;
    first.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_other_replica_takes_over_a_dead_replicas_delivery_only_after_its_lease() {
    let Some(db) = postgres_db("notify_takeover").await else {
        return;
    };
    let receiver = Receiver::start(&[], 200).await;
    receiver.hold(Some(Duration::from_secs(60)));
    let settings = |n: &mut subsidy_notification::Settings| {
        n.webhook_timeout_ms = 1_000;
    };
    // The first replica alone takes the delivery; then the second starts beside it.
    let first = Service::start(config(&db, settings)).await;
    let mut client = first.client.clone();
    subscribe(&mut client, &receiver.url, |_| {}).await;
    publish(
        &mut client,
        event("takeover-1", pb::EventType::ClaimApproved, "app-1"),
    )
    .await;
    eventually("the receiver holds the first attempt", || async {
        (receiver.requests().len() == 1).then_some(())
    })
    .await;
    let second = Service::start(config(&db, settings)).await;
    let lease_until_us: i64 =
        sqlx::query_scalar("SELECT lease_until_us FROM deliveries WHERE event_id = 'takeover-1'")
            .fetch_one(&inspect(&db).await.pool)
            .await
            .expect("the delivery is leased");
    first.crash().await;
    receiver.hold(None);

    let mut client = second.client.clone();
    let delivered = delivery_in_state(
        &mut client,
        "takeover-1",
        pb::Channel::Webhook,
        pb::DeliveryState::Delivered,
    )
    .await;
    assert_eq!(delivered.attempt_count, 1);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2, "sent again once, by the second replica");
    let again_us = requests[1]
        .at
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_micros() as i64;
    assert!(
        again_us >= lease_until_us,
        "not sent again while the dead replica's lease held ({} ms early)",
        (lease_until_us - again_us) / 1000
    );
    assert_in_flight_counters(&inspect(&db).await).await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_dead_letter_and_disable_a_failing_endpoint_once() {
    // Both workers retry deliveries to an endpoint that always fails: each delivery is
    // attempted on the schedule (not twice as often), dead-lettered once, and the subscription
    // disabled once, with one notice to its owner.
    let Some(db) = postgres_db("notify_replicas_disable").await else {
        return;
    };
    let mut relay = Python::start("smtp_sink.py", &[]).await;
    let receiver = Receiver::start(&[], 503).await;
    let smtp_url = format!("smtp://127.0.0.1:{}", relay.port);
    let settings = move |n: &mut subsidy_notification::Settings| {
        n.retry_schedule_ms = vec![0, 300, 300, 300, 300, 300, 300, 300];
        n.disable_after_ms = 1_000;
        n.smtp_url = smtp_url.clone();
    };
    let first = Service::start(config(&db, settings.clone())).await;
    let second = Service::start(config(&db, settings)).await;
    let mut client = first.client.clone();
    let (subscription, _) = subscribe(&mut client, &receiver.url, |r| {
        r.contact_email = "ops@agency.example.org".into();
    })
    .await;
    let mut other = second.client.clone();
    for i in 0..4 {
        let target = if i % 2 == 0 { &mut client } else { &mut other };
        publish(
            target,
            event(
                &format!("down-{i}"),
                pb::EventType::ClaimSubmitted,
                &format!("app-{i}"),
            ),
        )
        .await;
    }
    eventually("the subscription is disabled", || {
        let mut client = client.clone();
        let id = subscription.subscription_id.clone();
        async move {
            let s = client
                .get_subscription(pb::GetSubscriptionRequest {
                    subscription_id: id,
                })
                .await
                .unwrap()
                .into_inner()
                .subscription
                .unwrap();
            (s.state() == pb::SubscriptionState::Disabled).then_some(s)
        }
    })
    .await;
    let mut attempted = 0;
    for i in 0..4 {
        let dead = delivery_in_state(
            &mut client,
            &format!("down-{i}"),
            pb::Channel::Webhook,
            pb::DeliveryState::DeadLettered,
        )
        .await;
        assert!(
            (1..=8).contains(&dead.attempt_count),
            "down-{i}: attempted on the schedule, not twice: {}",
            dead.attempt_count
        );
        attempted += dead.attempt_count as usize;
    }
    assert_eq!(
        receiver.requests().len(),
        attempted,
        "every attempt sent once and recorded once"
    );
    let notice = relay.next().await;
    assert_eq!(
        notice["rcpt_tos"],
        serde_json::json!(["ops@agency.example.org"])
    );
    // No second notice from the other replica.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        relay.try_next().is_none(),
        "one notice, not one per replica"
    );
    assert_in_flight_counters(&inspect(&db).await).await;
    first.stop().await;
    second.stop().await;
}
