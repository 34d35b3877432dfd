//! A server stream that fails after it has sent messages ends with its status in the trailers,
//! not in the response headers (those went out with the first message): its server span must
//! still carry that status. Proved end to end on the real notification service's
//! `StreamEvents`, exported over OTLP to a real receiver.

use opentelemetry::trace::TraceContextExt;
use subsidy_common::config::{ServiceKind, TelemetryConfig};
use subsidy_proto::notification as npb;
use subsidy_proto::notification::notification_service_client::NotificationServiceClient;
use subsidy_testkit::otlp::{Receiver, SpanKind, StatusCode};
use subsidy_testkit::*;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

const STREAM_EVENTS: &str = "subsidy.notification.v1.NotificationService/StreamEvents";
/// The events published before the stream opens: the stream sends them, then fails.
const EVENTS: usize = 3;

/// Renames a table of the notification service's database behind its back.
async fn rename(stack: &Stack, from: &str, to: &str) {
    let db = stack.database(ServiceKind::Notification).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER TABLE {from} RENAME TO {to}"
    )))
    .execute(&db.pool)
    .await
    .expect("rename the table");
    db.pool.close().await;
}

fn event(n: usize) -> npb::PublishEventRequest {
    npb::PublishEventRequest {
        event: Some(npb::Event {
            event_id: format!("trace-stream-event-{n}"),
            r#type: npb::EventType::ClaimSubmitted as i32,
            application_id: format!("claim-trace-stream-{n}"),
            enterprise_uscc: shandong(81).to_string(),
            program: npb::Program::ComputeVoucher as i32,
            amount: cny(100),
            occur_time: Some(prost_types::Timestamp {
                seconds: 1_750_000_000,
                nanos: 0,
            }),
            ..npb::Event::default()
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_failing_after_messages_exports_its_server_span_with_the_trailers_status() {
    // Proves: StreamEvents sends the stored events, then its feed can no longer be read (the
    // feed's head table is renamed behind the service's back, a real failure of the query the
    // follower polls with) and the stream ends with an error status in its trailers; the
    // StreamEvents server span exported over OTLP carries that code as `rpc.grpc.status_code`
    // and status ERROR, and it is the child of the caller's span.
    let receiver = Receiver::start().await;
    let telemetry = subsidy_common::telemetry::init_per_service(
        "subsidy-dev",
        &TelemetryConfig {
            log_format: "text".into(),
            log_filter: "info".into(),
            otlp_endpoint: Some(receiver.endpoint.clone()),
            metrics_listen: "off".into(),
        },
    )
    .expect("telemetry with an OTLP exporter");
    let mut overrides = Overrides::new();
    overrides.insert(
        ServiceKind::Notification,
        vec![
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                receiver.endpoint.clone(),
            ),
            // The follower looks at the feed every 50 ms once it has caught up.
            ("SUBSIDY_NOTIFICATION_POLL_INTERVAL_MS".into(), "50".into()),
        ],
    );
    let stack = subsidy_tests::spawn_with(overrides).await;
    let mut notes: NotificationServiceClient<Channel> = stack.notification().await;
    for n in 0..EVENTS {
        notes
            .publish_event(event(n))
            .await
            .expect("publish an event");
    }

    let root = tracing::info_span!("agency.follow_feed");
    let trace_id = root.context().span().span_context().trace_id();
    let mut stream = notes
        .stream_events(npb::StreamEventsRequest {
            from_beginning: true,
            ..npb::StreamEventsRequest::default()
        })
        .instrument(root)
        .await
        .expect("the stream opens")
        .into_inner();
    let mut received = Vec::new();
    while received.len() < EVENTS {
        let message = stream
            .message()
            .await
            .expect("the stored events are sent")
            .expect("the stream goes on");
        if let Some(event) = message.event {
            received.push(event.event_id);
        }
    }
    rename(&stack, "feed_head", "feed_head_gone").await;
    let failure = loop {
        match stream.message().await {
            Ok(Some(_heartbeat_or_event)) => continue,
            Ok(None) => panic!("the stream ended without an error"),
            Err(status) => break status,
        }
    };
    assert!(
        matches!(
            failure.code(),
            tonic::Code::Internal | tonic::Code::Unavailable
        ),
        "the feed cannot be read: {failure:?}"
    );
    rename(&stack, "feed_head_gone", "feed_head").await;
    // Dropping the guard after the services stopped flushes every span.
    stack.shutdown().await;
    drop(telemetry);

    let spans = receiver.spans();
    let summary: Vec<String> = spans
        .iter()
        .map(|span| format!("{:?} {} {:?}", span.kind, span.name, span.status))
        .collect();
    let in_trace =
        |span: &&subsidy_testkit::otlp::ReceivedSpan| span.trace_id == trace_id.to_bytes().to_vec();
    let root = spans
        .iter()
        .filter(in_trace)
        .find(|span| span.name == "agency.follow_feed")
        .unwrap_or_else(|| panic!("the caller's span: {summary:#?}"));
    let server = spans
        .iter()
        .filter(in_trace)
        .find(|span| span.name == STREAM_EVENTS && span.kind == SpanKind::Server)
        .unwrap_or_else(|| panic!("the StreamEvents server span in the trace: {summary:#?}"));
    assert_eq!(server.parent_span_id, root.span_id, "{summary:#?}");
    assert_eq!(server.service_name, "subsidy-notification");
    assert_eq!(
        server.attribute("rpc.grpc.status_code"),
        Some((failure.code() as i32).to_string().as_str()),
        "the status of the trailers, not the OK of the headers: {:?}",
        server.attributes
    );
    assert_eq!(server.status, StatusCode::Error, "{:?}", server.attributes);
    assert_eq!(server.attribute("rpc.system"), Some("grpc"));
    assert_eq!(
        server.attribute("rpc.service"),
        Some("subsidy.notification.v1.NotificationService")
    );
}
