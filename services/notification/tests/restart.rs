//! Durability: deliveries survive a restart of the service, and an attempt cut off by a crash
//! is made again.

mod support;

use std::time::Duration;

use subsidy_proto::notification as pb;
use support::*;

#[tokio::test]
async fn deliveries_pending_at_shutdown_are_delivered_after_a_restart() {
    // Proves the queue lives in the database: deliveries waiting for a retry when the service
    // stops are delivered, in order, by the next process on the same database.
    let db = fresh_db("notify_restart").await;
    let receiver = Receiver::start(&[503, 503, 503], 200).await;
    let settings = |n: &mut subsidy_notification::Settings| {
        n.retry_schedule_ms = vec![0, 1_500, 1_500];
    };
    let first = Service::start(config(&db, settings)).await;
    let mut client = first.client.clone();
    subscribe(&mut client, &receiver.url, |_| {}).await;
    for i in 0..3 {
        publish(
            &mut client,
            event(
                &format!("r-{i}"),
                pb::EventType::ClaimSubmitted,
                &format!("app-{i}"),
            ),
        )
        .await;
    }
    for i in 0..3 {
        let waiting = delivery_in_state(
            &mut client,
            &format!("r-{i}"),
            pb::Channel::Webhook,
            pb::DeliveryState::FailedRetrying,
        )
        .await;
        assert_eq!(waiting.attempt_count, 1);
        assert!(
            waiting.next_attempt_time.is_some(),
            "the next attempt is shown"
        );
    }
    first.stop().await;

    let second = Service::start(config(&db, settings)).await;
    let mut client = second.client.clone();
    for i in 0..3 {
        let delivered = delivery_in_state(
            &mut client,
            &format!("r-{i}"),
            pb::Channel::Webhook,
            pb::DeliveryState::Delivered,
        )
        .await;
        assert_eq!(delivered.attempt_count, 2);
    }
    assert_eq!(receiver.requests().len(), 6);
    assert_in_flight_counters(&inspect(&db).await).await;
    second.stop().await;
}

#[tokio::test]
async fn an_attempt_cut_off_by_a_crash_is_made_again_after_its_lease_expires() {
    // Proves at-least-once delivery across a crash: the attempt under way when the process
    // died is made again by the next process once its lease has expired.
    let db = fresh_db("notify_crash").await;
    let receiver = Receiver::start(&[], 200).await;
    receiver.hold(Some(Duration::from_secs(60)));
    let settings = |n: &mut subsidy_notification::Settings| {
        n.webhook_timeout_ms = 1_000;
    };
    let first = Service::start(config(&db, settings)).await;
    let mut client = first.client.clone();
    subscribe(&mut client, &receiver.url, |_| {}).await;
    publish(
        &mut client,
        event("crash-1", pb::EventType::ClaimApproved, "app-1"),
    )
    .await;
    delivery_in_state(
        &mut client,
        "crash-1",
        pb::Channel::Webhook,
        pb::DeliveryState::InFlight,
    )
    .await;
    eventually("the receiver holds the first attempt", || async {
        (receiver.requests().len() == 1).then_some(())
    })
    .await;
    first.crash().await;

    receiver.hold(None);
    let second = Service::start(config(&db, settings)).await;
    let mut client = second.client.clone();
    let delivered = delivery_in_state(
        &mut client,
        "crash-1",
        pb::Channel::Webhook,
        pb::DeliveryState::Delivered,
    )
    .await;
    assert_eq!(
        delivered.attempt_count, 1,
        "the cut-off attempt left no record; the repeat is the first recorded"
    );
    let ids: Vec<String> = receiver
        .requests()
        .iter()
        .map(|r| r.headers["webhook-id"].clone())
        .collect();
    assert_eq!(
        ids,
        vec!["crash-1", "crash-1"],
        "delivered again with the same id"
    );
    assert_in_flight_counters(&inspect(&db).await).await;
    second.stop().await;
}
