//! `subsidy dev` runs the four services in one process, with one tracer provider, and still
//! exports each span to OTLP under the `service.name` of the service that recorded it.

use opentelemetry::trace::TraceContextExt;
use subsidy_common::config::{ServiceKind, TelemetryConfig};
use subsidy_proto::application as pb;
use subsidy_testkit::otlp::{ReceivedSpan, Receiver, SpanKind};
use subsidy_testkit::requests::{contract, register, submitted, wait_claim_state};
use subsidy_testkit::*;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_services_in_one_process_export_each_span_under_its_own_service_name() {
    // Proves: with the telemetry `subsidy dev` installs, the spans of one claim submission
    // arrive under the service that recorded them: the application's SubmitClaim server span,
    // and its client span calling rules inside it, as `subsidy-application`; the rules server
    // span (the client span's child) as `subsidy-rules`; the budget's Reserve as
    // `subsidy-budget`; the caller's own span, of no service, as the process (`subsidy-dev`).
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
    // The four services run in this process as `subsidy dev` runs them (`launch::run_service`),
    // configured with the endpoint as `subsidy dev` passes OTEL_* on to each.
    let mut overrides = quick_application(&[]);
    for kind in ServiceKind::ALL {
        overrides.entry(kind).or_default().push((
            "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
            receiver.endpoint.clone(),
        ));
    }
    let stack = subsidy_tests::spawn_with(overrides).await;
    let mut app = stack.app().await;
    let buyer = shandong(62);
    register(&mut app, &buyer).await;

    let root = tracing::info_span!("agency.submit_claim");
    let trace_id = root.context().span().span_context().trace_id();
    let claim = submitted(
        &mut app,
        "otlp-per-service-claim",
        &buyer,
        contract("OTLP-PER-SERVICE-1", &seller(1), 100_000_000),
    )
    .instrument(root)
    .await;
    wait_claim_state(&app, &claim.claim_id, pb::ClaimState::PendingReview).await;
    // Dropping the guard after the services stopped flushes every span.
    stack.shutdown().await;
    drop(telemetry);

    let in_trace: Vec<ReceivedSpan> = receiver
        .spans()
        .into_iter()
        .filter(|span| span.trace_id == trace_id.to_bytes())
        .collect();
    let summary: Vec<String> = in_trace
        .iter()
        .map(|span| format!("{} {:?} {}", span.service_name, span.kind, span.name))
        .collect();
    let span = |name: &str, kind: SpanKind| {
        in_trace
            .iter()
            .find(|span| span.name == name && span.kind == kind)
            .unwrap_or_else(|| panic!("a {kind:?} span {name} in the trace: {summary:#?}"))
    };
    let submit = span(
        "subsidy.application.v1.ApplicationService/SubmitClaim",
        SpanKind::Server,
    );
    let evaluate = "subsidy.rules.v1.RulesService/EvaluateComputeVoucher";
    let (call, rules) = (
        span(evaluate, SpanKind::Client),
        span(evaluate, SpanKind::Server),
    );
    let reserve = span("subsidy.budget.v1.BudgetService/Reserve", SpanKind::Server);
    let root = span("agency.submit_claim", SpanKind::Internal);
    assert_eq!(call.parent_span_id, submit.span_id, "{summary:#?}");
    assert_eq!(rules.parent_span_id, call.span_id, "{summary:#?}");
    for (span, service) in [
        (submit, "subsidy-application"),
        (call, "subsidy-application"),
        (rules, "subsidy-rules"),
        (reserve, "subsidy-budget"),
        (root, "subsidy-dev"),
    ] {
        assert_eq!(
            span.service_name, service,
            "{} {:?} is exported as {service}: {summary:#?}",
            span.name, span.kind
        );
    }
    assert_eq!(
        call.attribute("subsidy.service"),
        Some("application"),
        "the client span names its caller; rpc.service names the peer"
    );
    assert_eq!(
        call.attribute("rpc.service"),
        Some("subsidy.rules.v1.RulesService")
    );
}
