//! How a call ended, on its spans, as the OpenTelemetry RPC semantic conventions describe it: a
//! span is named `package.Service/Method` and carries `rpc.system`, `rpc.service` (the full
//! service name), `rpc.method` and `rpc.grpc.status_code`; a server span's status is ERROR when
//! the server failed the call and left unset when the code blames the request; a client span's
//! status is ERROR whenever the call did not succeed.

use opentelemetry::trace::{SpanKind, Status, TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use subsidy_common::config::ServiceKind;
use subsidy_proto::application as pb;
use subsidy_testkit::Overrides;
use subsidy_testkit::outage::Outage;
use subsidy_testkit::requests::{contract, register, submit};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

const REGISTER: &str = "subsidy.application.v1.ApplicationService/RegisterEnterprise";
/// The application's deadline for a call, shorter than SQLite's busy timeout (10 s), so that a
/// write waiting on a database taken away ends as DEADLINE_EXCEEDED within seconds; long enough
/// that the calls meant to succeed do so also on a loaded 2-core machine.
const REQUEST_TIMEOUT_MS: &str = "3000";
/// How long the spans of a trace may take to reach the exporter.
const SPAN_WAIT_S: u64 = 15;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_carry_the_grpc_status_and_error_when_the_call_failed() {
    // Proves: three calls of one RPC (answered, refused as INVALID_ARGUMENT, failed by the
    // server while its database is taken away) each leave a server span named
    // `package.Service/Method` with the RPC attributes and the call's status code; only the
    // server's failure has status ERROR. A call to a peer that is down is a client span with
    // status ERROR.
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::INFO)
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("trace-status-test")));
    tracing::subscriber::set_global_default(subscriber)
        .expect("the only subscriber of this test binary");

    let mut overrides = Overrides::default();
    overrides
        .entry(ServiceKind::Application)
        .or_default()
        .push((
            "SUBSIDY_REQUEST_TIMEOUT_MS".into(),
            REQUEST_TIMEOUT_MS.into(),
        ));
    let mut stack = subsidy_tests::spawn_with(overrides).await;
    let mut app = stack.app().await;
    let registration = |request_id: &str, uscc: &str| pb::RegisterEnterpriseRequest {
        request_id: request_id.into(),
        uscc: uscc.into(),
        name: "Traced".into(),
        contact_email: "ops@example.cn".into(),
        ..Default::default()
    };

    let answered = subsidy_testkit::shandong(71);
    let (answered_trace, result) =
        traced(app.register_enterprise(registration("traced-ok", answered.as_str()))).await;
    result.expect("the registration is answered");
    let (refused_trace, result) =
        traced(app.register_enterprise(registration("traced-bad", "not a code"))).await;
    assert_eq!(result.unwrap_err().code(), tonic::Code::InvalidArgument);
    let outage = Outage::begin(&stack, ServiceKind::Application).await;
    let failed = subsidy_testkit::shandong(72);
    let (failed_trace, result) =
        traced(app.register_enterprise(registration("traced-down", failed.as_str()))).await;
    let failed_code = result.expect_err("no database, no registration").code();
    assert!(
        matches!(
            failed_code,
            tonic::Code::DeadlineExceeded | tonic::Code::Unavailable
        ),
        "{failed_code:?}"
    );
    outage.end().await;

    let answered = span_in(
        (&provider, &exporter),
        answered_trace,
        SpanKind::Server,
        REGISTER,
    )
    .await;
    assert_rpc_attributes(&answered, 0);
    assert_eq!(answered.status, Status::Unset, "{answered:?}");
    let refused = span_in(
        (&provider, &exporter),
        refused_trace,
        SpanKind::Server,
        REGISTER,
    )
    .await;
    assert_rpc_attributes(&refused, tonic::Code::InvalidArgument as i64);
    assert_eq!(refused.status, Status::Unset, "{refused:?}");
    let failed = span_in(
        (&provider, &exporter),
        failed_trace,
        SpanKind::Server,
        REGISTER,
    )
    .await;
    assert_rpc_attributes(&failed, failed_code as i64);
    assert!(matches!(failed.status, Status::Error { .. }), "{failed:?}");

    // A peer that is not there: the application's call to the rules service is a client span
    // with status ERROR, whatever the application then answers.
    let buyer = subsidy_testkit::shandong(73);
    register(&mut app, &buyer).await;
    stack.stop(ServiceKind::Rules).await;
    let claim = submit(
        "traced-claim",
        &buyer,
        contract("TRACED-1", &subsidy_testkit::seller(1), 100_000_000),
    );
    let (peerless_trace, _) = traced(app.submit_claim(claim)).await;
    let call = span_in(
        (&provider, &exporter),
        peerless_trace,
        SpanKind::Client,
        "subsidy.rules.v1.RulesService/EvaluateComputeVoucher",
    )
    .await;
    assert!(matches!(call.status, Status::Error { .. }), "{call:?}");
    stack.shutdown().await;
}

/// Runs `call` inside a fresh root span (the kit's channel sends its trace context along) and
/// returns the root's trace id with the call's result.
async fn traced<T>(call: impl std::future::Future<Output = T>) -> (TraceId, T) {
    let root = tracing::info_span!("agency.register");
    let trace_id = root.context().span().span_context().trace_id();
    (trace_id, call.instrument(root).await)
}

/// The span of `kind` named `name` in `trace_id`, waited for (a span ends when its future is
/// dropped, which can be a moment after the client has the answer).
async fn span_in(
    (provider, exporter): (&SdkTracerProvider, &InMemorySpanExporter),
    trace_id: TraceId,
    kind: SpanKind,
    name: &str,
) -> SpanData {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(SPAN_WAIT_S);
    loop {
        let _ = provider.force_flush();
        let found = exporter
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .find(|span| {
                span.span_context.trace_id() == trace_id
                    && span.span_kind == kind
                    && span.name == name
            });
        if let Some(span) = found {
            return span;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {kind:?} span {name} in trace {trace_id}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The RPC attributes of the conventions, with `status_code` as `rpc.grpc.status_code`.
fn assert_rpc_attributes(span: &SpanData, status_code: i64) {
    let attribute = |key: &str| {
        span.attributes
            .iter()
            .find(|pair: &&KeyValue| pair.key.as_str() == key)
            .map(|attribute| attribute.value.clone())
    };
    assert_eq!(
        attribute("rpc.system"),
        Some(Value::from("grpc")),
        "{span:?}"
    );
    assert_eq!(
        attribute("rpc.service"),
        Some(Value::from("subsidy.application.v1.ApplicationService")),
        "{span:?}"
    );
    assert_eq!(
        attribute("rpc.method"),
        Some(Value::from("RegisterEnterprise")),
        "{span:?}"
    );
    assert_eq!(
        attribute("rpc.grpc.status_code"),
        Some(Value::I64(status_code)),
        "{span:?}"
    );
}
