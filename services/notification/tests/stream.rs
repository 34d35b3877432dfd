//! The server-streaming feed: resumable from a cursor without gaps, filters and heartbeats.

mod support;

use std::collections::BTreeSet;

use subsidy_proto::notification as pb;
use subsidy_proto::status::reason;
use support::*;
use tonic::Code;

/// Receives the next message of a stream within the deadline.
async fn next(stream: &mut tonic::Streaming<pb::StreamEventsResponse>) -> pb::StreamEventsResponse {
    tokio::time::timeout(DEADLINE, stream.message())
        .await
        .expect("a message within the deadline")
        .expect("the stream is healthy")
        .expect("the stream is open")
}

#[tokio::test]
async fn a_stream_client_that_reconnects_with_its_cursor_misses_nothing() {
    // Proves, with three producers publishing concurrently, that a client which disconnects
    // half-way and resumes from its last cursor receives every event, in feed order, each
    // exactly once across the two connections.
    let db = fresh_db("notify_stream_resume").await;
    let service = Service::start(config(&db, |_| {})).await;
    let mut client = service.client.clone();
    const PRODUCERS: usize = 3;
    const PER_PRODUCER: usize = 20;
    const TOTAL: usize = PRODUCERS * PER_PRODUCER;
    let mut stream = client
        .stream_events(pb::StreamEventsRequest {
            from_beginning: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let mut client = service.client().await;
        producers.push(tokio::spawn(async move {
            for i in 0..PER_PRODUCER {
                publish(
                    &mut client,
                    event(
                        &format!("p{p}-{i}"),
                        pb::EventType::ClaimSubmitted,
                        &format!("app-{p}"),
                    ),
                )
                .await;
            }
        }));
    }
    let mut received = Vec::new();
    let mut cursor = String::new();
    while received.len() < TOTAL / 3 {
        let message = next(&mut stream).await;
        if let Some(event) = message.event {
            received.push(event.event_id);
        }
        cursor = message.cursor;
    }
    drop(stream);
    for producer in producers {
        producer.await.unwrap();
    }
    let mut resumed = client
        .stream_events(pb::StreamEventsRequest {
            cursor,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    while received.len() < TOTAL {
        if let Some(event) = next(&mut resumed).await.event {
            received.push(event.event_id);
        }
    }
    let unique: BTreeSet<&String> = received.iter().collect();
    assert_eq!(
        unique.len(),
        TOTAL,
        "no event missed or repeated: {received:?}"
    );
    let feed: Vec<String> = client
        .list_events(pb::ListEventsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(received, feed, "the stream follows feed order");
    for p in 0..PRODUCERS {
        let own: Vec<&String> = received
            .iter()
            .filter(|id| id.starts_with(&format!("p{p}-")))
            .collect();
        let expected: Vec<String> = (0..PER_PRODUCER).map(|i| format!("p{p}-{i}")).collect();
        assert_eq!(
            own,
            expected.iter().collect::<Vec<_>>(),
            "each producer's events keep its order"
        );
    }
    service.stop().await;
}

#[tokio::test]
async fn a_filtered_stream_gets_heartbeats_whose_cursor_skips_what_it_filtered_out() {
    // Proves a stream only carries matching events, that a heartbeat comes after a silence,
    // that its cursor lets a reconnect skip the events the filter dropped, and that the
    // server's request timeout (shorter than the stream's life here) does not cut streams.
    let db = fresh_db("notify_stream_filter").await;
    let mut settings = config(&db, |n| n.stream_heartbeat_ms = 300);
    const REQUEST_TIMEOUT_MS: u64 = 1_000;
    settings.server.request_timeout_ms = REQUEST_TIMEOUT_MS;
    let service = Service::start(settings).await;
    let mut client = service.client.clone();
    let mut stream = client
        .stream_events(pb::StreamEventsRequest {
            event_types: vec![pb::EventType::ClaimApproved as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let opened = std::time::Instant::now();
    publish(
        &mut client,
        event("f-1", pb::EventType::ClaimSubmitted, "app-1"),
    )
    .await;
    publish(
        &mut client,
        event("f-2", pb::EventType::ClaimApproved, "app-1"),
    )
    .await;
    let last = publish(
        &mut client,
        event("f-3", pb::EventType::ClaimSubmitted, "app-1"),
    )
    .await;
    let first = next(&mut stream).await;
    assert_eq!(first.event.unwrap().event_id, "f-2");
    // Heartbeats may also come between the publications; the one after f-3 moves past it.
    let start = std::time::Instant::now();
    let heartbeat = loop {
        let message = next(&mut stream).await;
        assert!(message.event.is_none(), "only f-2 matches");
        if message.cursor == last.cursor {
            break message;
        }
        assert!(start.elapsed() < DEADLINE, "no heartbeat past f-3");
    };
    assert!(heartbeat.event.is_none());
    while opened.elapsed() < std::time::Duration::from_millis(2 * REQUEST_TIMEOUT_MS) {
        let message = next(&mut stream).await;
        assert!(message.event.is_none(), "only heartbeats follow");
        assert_eq!(message.cursor, last.cursor, "nothing new was published");
    }
    service.stop().await;
}

#[tokio::test]
async fn a_cursor_the_service_did_not_issue_is_refused() {
    // Proves foreign, malformed and future cursors are refused with CURSOR_INVALID, and that
    // a cursor cannot be combined with from_beginning.
    let db = fresh_db("notify_stream_cursor").await;
    let service = Service::start(config(&db, |_| {})).await;
    let mut client = service.client.clone();
    let issued = publish(
        &mut client,
        event("c-1", pb::EventType::ClaimSubmitted, "app-1"),
    )
    .await
    .cursor;
    // The cursor of a position the feed has not reached, and a page token of another list,
    // in the encoding cursors have.
    let future = hex::encode("feed:999");
    let foreign = hex::encode("events:1");
    for cursor in ["zz".to_owned(), future, foreign] {
        let status = client
            .stream_events(pb::StreamEventsRequest {
                cursor: cursor.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{cursor}");
        assert_eq!(
            reason(&status).as_deref(),
            Some("CURSOR_INVALID"),
            "{cursor}"
        );
    }
    let status = client
        .stream_events(pb::StreamEventsRequest {
            cursor: issued,
            from_beginning: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(reason(&status).as_deref(), Some("INVALID_ARGUMENT"));
    service.stop().await;
}
