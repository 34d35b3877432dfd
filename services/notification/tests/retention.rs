//! Bounded storage: finished deliveries (with their attempts) and then their events are pruned
//! after `notification.delivery_retention_ms`, from the oldest event on; an event whose
//! delivery is not finished stays, and so does every later event; a stream cannot resume from
//! a pruned position without being told (`CURSOR_EXPIRED`). Idempotency records go after
//! `database.request_retention_ms`.

mod support;

use std::time::Duration;

use subsidy_notification::stream::cursor;
use subsidy_proto::notification as pb;
use support::*;

/// Retention of this test: short enough to watch, long enough for the deliveries to finish.
const RETENTION_MS: u64 = 2_000;

async fn count(db: &subsidy_common::db::Db, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&db.pool)
        .await
        .expect("count rows")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_deliveries_and_their_events_are_pruned_and_the_rest_stays() {
    let db = fresh_db("notify_retention").await;
    // Two deliveries succeed; every later one fails and waits for a retry (not finished).
    let receiver = Receiver::start(&[200, 200], 503).await;
    let mut config = config(&db, |n| {
        n.delivery_retention_ms = RETENTION_MS;
        n.retry_schedule_ms = vec![0, 600_000];
    });
    config.database.prune_interval_ms = 100;
    config.database.request_retention_ms = RETENTION_MS;
    let service = Service::start(config).await;
    let mut client = service.client.clone();
    subscribe(&mut client, &receiver.url, |_| {}).await;
    for (i, state) in [
        (1, pb::DeliveryState::Delivered),
        (2, pb::DeliveryState::Delivered),
        (3, pb::DeliveryState::FailedRetrying),
    ] {
        let event_id = format!("keep-{i}");
        publish(
            &mut client,
            event(&event_id, pb::EventType::ClaimApproved, &format!("app-{i}")),
        )
        .await;
        delivery_in_state(&mut client, &event_id, pb::Channel::Webhook, state).await;
    }
    let inspect = inspect(&db).await;
    assert_eq!(
        count(
            &inspect,
            "SELECT CAST(COUNT(*) AS BIGINT) FROM idempotency_keys"
        )
        .await,
        1,
        "the subscription's request is remembered"
    );
    tokio::time::sleep(Duration::from_millis(RETENTION_MS + 200)).await;
    // A new event, within the retention.
    publish(
        &mut client,
        event("keep-4", pb::EventType::ClaimApproved, "app-4"),
    )
    .await;

    eventually(
        "the finished deliveries and their events pruned",
        || async {
            let events = count(&inspect, "SELECT CAST(COUNT(*) AS BIGINT) FROM events").await;
            (events == 2).then_some(())
        },
    )
    .await;
    let left: Vec<(i64, String)> = sqlx::query_as("SELECT seq, event_id FROM events ORDER BY seq")
        .fetch_all(&inspect.pool)
        .await
        .unwrap();
    assert_eq!(
        left,
        vec![(3, "keep-3".to_owned()), (4, "keep-4".to_owned())],
        "the event whose delivery waits for a retry stays, and so does the newer one"
    );
    let deliveries: Vec<String> =
        sqlx::query_scalar("SELECT event_id FROM deliveries ORDER BY event_seq")
            .fetch_all(&inspect.pool)
            .await
            .unwrap();
    assert_eq!(deliveries, ["keep-3", "keep-4"]);
    assert_eq!(
        count(
            &inspect,
            "SELECT CAST(COUNT(*) AS BIGINT) FROM delivery_attempts a \
             WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.delivery_id = a.delivery_id)"
        )
        .await,
        0,
        "no attempt outlives its delivery"
    );
    eventually("the idempotency record pruned", || async {
        (count(
            &inspect,
            "SELECT CAST(COUNT(*) AS BIGINT) FROM idempotency_keys",
        )
        .await
            == 0)
            .then_some(())
    })
    .await;
    assert_eq!(
        count(
            &inspect,
            "SELECT CAST(COUNT(*) AS BIGINT) FROM subscriptions"
        )
        .await,
        1,
        "the subscription itself stays"
    );

    // A stream cannot resume from before the pruned events without being told.
    let expired = client
        .stream_events(pb::StreamEventsRequest {
            cursor: cursor(1),
            ..pb::StreamEventsRequest::default()
        })
        .await
        .expect_err("a pruned position");
    assert_eq!(expired.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        subsidy_proto::status::reason(&expired).as_deref(),
        Some("CURSOR_EXPIRED")
    );
    assert_eq!(
        subsidy_proto::status::metadata(&expired).get("oldest_cursor"),
        Some(&cursor(2))
    );
    // From the oldest cursor kept, and from the beginning: the events left, in order.
    for request in [
        pb::StreamEventsRequest {
            cursor: cursor(2),
            ..pb::StreamEventsRequest::default()
        },
        pb::StreamEventsRequest {
            from_beginning: true,
            ..pb::StreamEventsRequest::default()
        },
    ] {
        let mut stream = client.stream_events(request).await.unwrap().into_inner();
        let first = stream.message().await.unwrap().unwrap();
        assert_eq!(first.event.map(|e| e.event_id).as_deref(), Some("keep-3"));
    }
    service.stop().await;
}
