//! Intake: idempotent publication by event id, validation, and reading the stored feed.

mod support;

use subsidy_proto::notification as pb;
use subsidy_proto::status::{metadata, reason, violated_fields};
use support::*;
use tonic::Code;

#[tokio::test]
async fn a_replayed_event_id_is_stored_once_and_delivered_once() {
    // Proves a replay with the same content is accepted as a duplicate, answers with the
    // stored event and cursor, and schedules nothing new.
    let db = fresh_db("notify_replay").await;
    let receiver = Receiver::start(&[], 200).await;
    let service = Service::start(config(&db, |_| {})).await;
    let mut client = service.client.clone();
    subscribe(&mut client, &receiver.url, |_| {}).await;
    let mut original = event("evt-once", pb::EventType::ClaimApproved, "app-1");
    original.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into();
    original.tracestate = "rojo=00f067aa0ba902b7".into();
    original.recipient_email = "owner@enterprise.example.cn".into();

    let first = publish(&mut client, original.clone()).await;
    assert!(!first.duplicate);
    let second = publish(&mut client, original.clone()).await;
    assert!(second.duplicate);
    assert_eq!(second.cursor, first.cursor);
    assert_eq!(second.event, first.event, "the stored event is returned");
    let stored = first.event.unwrap();
    assert_eq!(
        stored.traceparent, original.traceparent,
        "the trace context is kept"
    );
    assert_eq!(stored.tracestate, original.tracestate);
    assert!(stored.publish_time.is_some());

    let inspect = inspect(&db).await;
    assert_eq!(count(&inspect, "events").await, 1);
    assert_eq!(
        count(&inspect, "deliveries").await,
        2,
        "one webhook and one email, scheduled once"
    );
    delivery_in_state(
        &mut client,
        "evt-once",
        pb::Channel::Webhook,
        pb::DeliveryState::Delivered,
    )
    .await;
    let webhook_requests = receiver.requests();
    assert_eq!(webhook_requests.len(), 1);
    assert_eq!(
        webhook_requests[0].headers["traceparent"], original.traceparent,
        "the receiver continues the producer's trace"
    );
    service.stop().await;
}

#[tokio::test]
async fn the_same_event_id_with_different_content_is_refused_as_reused() {
    // Proves an event id cannot be reused for another change, and nothing is written.
    let db = fresh_db("notify_reused").await;
    let service = Service::start(config(&db, |_| {})).await;
    let mut client = service.client.clone();
    publish(
        &mut client,
        event("evt-x", pb::EventType::ClaimApproved, "app-1"),
    )
    .await;
    let mut changed = event("evt-x", pb::EventType::ClaimApproved, "app-1");
    changed.amount = cny(1);
    let status = client
        .publish_event(pb::PublishEventRequest {
            event: Some(changed),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(reason(&status).as_deref(), Some("EVENT_ID_REUSED"));
    let inspect = inspect(&db).await;
    assert_eq!(count(&inspect, "events").await, 1);
    let head: i64 = sqlx::query_scalar("SELECT last_seq FROM feed_head")
        .fetch_one(&inspect.pool)
        .await
        .unwrap();
    assert_eq!(head, 1, "a refused publication does not move the feed");
    service.stop().await;
}

#[tokio::test]
async fn invalid_events_are_refused_with_field_violations_and_write_nothing() {
    // Proves each malformed field is named in a BadRequest violation and nothing is stored.
    let db = fresh_db("notify_invalid").await;
    let service = Service::start(config(&db, |_| {})).await;
    let mut client = service.client.clone();
    let base = event("evt-bad", pb::EventType::ClaimApproved, "app-1");
    let cases: Vec<(pb::Event, &str)> = vec![
        (
            pb::Event {
                event_id: String::new(),
                ..base.clone()
            },
            "event.event_id",
        ),
        (
            pb::Event {
                event_id: "has space".into(),
                ..base.clone()
            },
            "event.event_id",
        ),
        (
            pb::Event {
                r#type: 0,
                ..base.clone()
            },
            "event.type",
        ),
        (
            pb::Event {
                r#type: pb::EventType::SubscriptionDisabled as i32,
                ..base.clone()
            },
            "event.type",
        ),
        (
            pb::Event {
                application_id: String::new(),
                ..base.clone()
            },
            "event.application_id",
        ),
        (
            pb::Event {
                enterprise_uscc: "91350100M000100Y44".into(),
                ..base.clone()
            },
            "event.enterprise_uscc",
        ),
        (
            pb::Event {
                program: 0,
                ..base.clone()
            },
            "event.program",
        ),
        (
            pb::Event {
                amount: Some(subsidy_proto::google::r#type::Money {
                    currency_code: "CNY".into(),
                    units: 1,
                    nanos: 5_000_000,
                }),
                ..base.clone()
            },
            "event.amount",
        ),
        (
            pb::Event {
                amount: cny(0),
                ..base.clone()
            },
            "event.amount",
        ),
        (
            pb::Event {
                occur_time: None,
                ..base.clone()
            },
            "event.occur_time",
        ),
        (
            pb::Event {
                traceparent: "not-a-trace".into(),
                ..base.clone()
            },
            "event.traceparent",
        ),
        (
            pb::Event {
                recipient_email: "nobody".into(),
                ..base.clone()
            },
            "event.recipient_email",
        ),
        (
            pb::Event {
                language: 9,
                ..base.clone()
            },
            "event.language",
        ),
        (
            pb::Event {
                payload: Some(prost_types::Struct {
                    fields: [(
                        "big".to_owned(),
                        prost_types::Value {
                            kind: Some(prost_types::value::Kind::StringValue(
                                "x".repeat(70 * 1024),
                            )),
                        },
                    )]
                    .into(),
                }),
                ..base.clone()
            },
            "event.payload",
        ),
        (
            pb::Event {
                payload: Some(prost_types::Struct {
                    fields: [(
                        "nan".to_owned(),
                        prost_types::Value {
                            kind: Some(prost_types::value::Kind::NumberValue(f64::NAN)),
                        },
                    )]
                    .into(),
                }),
                ..base.clone()
            },
            "event.payload",
        ),
    ];
    for (bad, field) in cases {
        let status = client
            .publish_event(pb::PublishEventRequest {
                event: Some(bad.clone()),
            })
            .await
            .expect_err("bad input is refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        assert_eq!(reason(&status).as_deref(), Some("INVALID_ARGUMENT"));
        assert!(
            violated_fields(&status).contains(&field.to_string()),
            "{field} in {:?}",
            violated_fields(&status)
        );
    }
    let status = client
        .publish_event(pb::PublishEventRequest { event: None })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), vec!["event".to_string()]);
    let round = pb::Event {
        r#type: pb::EventType::RoundFinalized as i32,
        application_id: String::new(),
        enterprise_uscc: String::new(),
        round_id: "round-2025-1".into(),
        ..base.clone()
    };
    publish(&mut client, round).await;
    assert_eq!(
        count(&inspect(&db).await, "events").await,
        1,
        "only the valid round event is stored"
    );
    service.stop().await;
}

#[tokio::test]
async fn events_are_listed_in_feed_order_with_filters_and_pages() {
    // Proves ListEvents pages through the feed oldest first and applies its filters, and
    // GetEvent finds one event or answers EVENT_NOT_FOUND.
    let db = fresh_db("notify_list_events").await;
    let service = Service::start(config(&db, |_| {})).await;
    let mut client = service.client.clone();
    for i in 0..5 {
        let kind = if i % 2 == 0 {
            pb::EventType::ClaimSubmitted
        } else {
            pb::EventType::ClaimApproved
        };
        publish(
            &mut client,
            event(&format!("list-{i}"), kind, &format!("app-{}", i % 2)),
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_events(pb::ListEventsRequest {
                page_size: 2,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.events.len() <= 2);
        seen.extend(page.events.into_iter().map(|e| e.event_id));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, vec!["list-0", "list-1", "list-2", "list-3", "list-4"]);
    let approved = client
        .list_events(pb::ListEventsRequest {
            event_types: vec![pb::EventType::ClaimApproved as i32],
            application_id: "app-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(
        approved
            .iter()
            .map(|e| e.event_id.as_str())
            .collect::<Vec<_>>(),
        vec!["list-1", "list-3"]
    );
    let found = client
        .get_event(pb::GetEventRequest {
            event_id: "list-3".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        found.event.unwrap().r#type,
        pb::EventType::ClaimApproved as i32
    );
    let status = client
        .get_event(pb::GetEventRequest {
            event_id: "missing".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(reason(&status).as_deref(), Some("EVENT_NOT_FOUND"));
    let status = client
        .list_events(pb::ListEventsRequest {
            page_token: "zz".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), vec!["page_token".to_string()]);
    service.stop().await;
}

/// Publishes `events` in one `PublishEvents` call.
async fn publish_all(
    client: &mut pb::notification_service_client::NotificationServiceClient<
        subsidy_testkit::Channel,
    >,
    events: Vec<pb::Event>,
) -> Result<Vec<pb::PublishEventResponse>, tonic::Status> {
    client
        .publish_events(pb::PublishEventsRequest { events })
        .await
        .map(|response| response.into_inner().results)
}

/// The ids of the stored events in feed order, and the feed head.
async fn feed(db: &subsidy_common::db::Db) -> (Vec<String>, i64) {
    let ids = sqlx::query_scalar("SELECT event_id FROM events ORDER BY seq")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    let head = sqlx::query_scalar("SELECT last_seq FROM feed_head")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    (ids, head)
}

#[tokio::test]
async fn a_batch_is_stored_in_its_order_with_its_deliveries_and_replays_are_duplicates() {
    // Proves PublishEvents: the new events of a batch take consecutive feed positions in the
    // request's order, each gets its deliveries (a webhook per matching subscription, an email
    // when it names a recipient), one audit record each; an event stored before, or repeated
    // within the batch, is answered as a duplicate with the event stored first; the same batch
    // again changes nothing.
    let db = fresh_db("notify_batch").await;
    let receiver = Receiver::start(&[], 200).await;
    let service = Service::start(config(&db, |_| {})).await;
    let mut client = service.client.clone();
    subscribe(&mut client, &receiver.url, |_| {}).await;
    let first = publish(
        &mut client,
        event("evt-0", pb::EventType::ClaimSubmitted, "app-0"),
    )
    .await;
    let mut mailed = event("evt-1", pb::EventType::ClaimApproved, "app-1");
    mailed.recipient_email = "owner@enterprise.example.cn".into();
    let batch = vec![
        mailed.clone(),
        event("evt-0", pb::EventType::ClaimSubmitted, "app-0"),
        event("evt-2", pb::EventType::ClaimRejected, "app-2"),
        mailed,
    ];
    let results = publish_all(&mut client, batch.clone()).await.unwrap();
    let duplicates: Vec<bool> = results.iter().map(|r| r.duplicate).collect();
    assert_eq!(duplicates, [false, true, false, true]);
    let ids: Vec<&str> = results
        .iter()
        .map(|r| r.event.as_ref().unwrap().event_id.as_str())
        .collect();
    assert_eq!(ids, ["evt-1", "evt-0", "evt-2", "evt-1"]);
    assert_eq!(
        (&results[1].event, &results[1].cursor),
        (&first.event, &first.cursor),
        "a stored event is answered as stored"
    );
    assert_eq!(results[3].cursor, results[0].cursor);
    assert_eq!(results[3].event, results[0].event);

    let inspect = inspect(&db).await;
    assert_eq!(
        feed(&inspect).await,
        (vec!["evt-0".into(), "evt-1".into(), "evt-2".into()], 3)
    );
    for (result, event_id) in results.iter().zip(["evt-1", "evt-0", "evt-2"]) {
        let stored = client
            .get_event(pb::GetEventRequest {
                event_id: event_id.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            result.cursor, stored.cursor,
            "{event_id}: its feed position"
        );
    }
    assert_eq!(deliveries_of(&mut client, "evt-1").await.len(), 2);
    assert_eq!(deliveries_of(&mut client, "evt-2").await.len(), 1);
    assert_eq!(count(&inspect, "deliveries").await, 4);
    delivery_in_state(
        &mut client,
        "evt-2",
        pb::Channel::Webhook,
        pb::DeliveryState::Delivered,
    )
    .await;
    let audited: Vec<String> = sqlx::query_scalar(
        "SELECT targets FROM audit_log WHERE rpc = $1 ORDER BY occurred_us, audit_id",
    )
    .bind("/subsidy.notification.v1.NotificationService/PublishEvents")
    .fetch_all(&inspect.pool)
    .await
    .unwrap();
    assert_eq!(audited.len(), 2, "{audited:?}");
    assert!(audited[0].contains("evt-1") && audited[1].contains("evt-2"));

    let again = publish_all(&mut client, batch).await.unwrap();
    assert!(again.iter().all(|r| r.duplicate));
    assert_eq!(
        again.iter().map(|r| r.cursor.clone()).collect::<Vec<_>>(),
        results.iter().map(|r| r.cursor.clone()).collect::<Vec<_>>()
    );
    assert_eq!(feed(&inspect).await.1, 3);
    assert_eq!(count(&inspect, "deliveries").await, 4);
    service.stop().await;
}

#[tokio::test]
async fn a_batch_with_a_reused_or_invalid_event_is_refused_whole_and_stores_nothing() {
    // Proves PublishEvents is all or nothing: an event id reused with other content (against
    // the feed or within the batch) is EVENT_ID_REUSED naming it, invalid events are
    // INVALID_ARGUMENT naming each field as `events[i].…`, an empty or oversized batch is
    // INVALID_ARGUMENT on `events`; none of them stores an event or moves the feed.
    let db = fresh_db("notify_batch_refused").await;
    let service = Service::start(config(&db, |_| {})).await;
    let mut client = service.client.clone();
    publish(
        &mut client,
        event("evt-x", pb::EventType::ClaimApproved, "app-1"),
    )
    .await;
    let good = event("evt-good", pb::EventType::ClaimApproved, "app-2");
    let mut changed = event("evt-x", pb::EventType::ClaimApproved, "app-1");
    changed.amount = cny(1);
    let mut changed_within = good.clone();
    changed_within.amount = cny(2);
    for (batch, reused) in [
        (vec![good.clone(), changed], "evt-x"),
        (vec![good.clone(), changed_within], "evt-good"),
    ] {
        let status = publish_all(&mut client, batch).await.unwrap_err();
        assert_eq!(status.code(), Code::AlreadyExists);
        assert_eq!(reason(&status).as_deref(), Some("EVENT_ID_REUSED"));
        assert_eq!(metadata(&status)["event_id"], reused, "{status:?}");
    }
    let status = publish_all(
        &mut client,
        vec![
            good.clone(),
            pb::Event {
                event_id: String::new(),
                ..good.clone()
            },
            pb::Event {
                r#type: 0,
                occur_time: None,
                ..good.clone()
            },
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&status),
        [
            "events[1].event_id",
            "events[2].type",
            "events[2].occur_time"
        ]
    );
    let too_many: Vec<pb::Event> = (0..101)
        .map(|n| event(&format!("evt-{n}"), pb::EventType::ClaimApproved, "app-3"))
        .collect();
    for batch in [Vec::new(), too_many] {
        let status = publish_all(&mut client, batch).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&status), ["events"]);
    }
    let inspect = inspect(&db).await;
    assert_eq!(feed(&inspect).await, (vec!["evt-x".into()], 1));
    assert_eq!(count(&inspect, "deliveries").await, 0);
    service.stop().await;
}
