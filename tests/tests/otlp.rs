//! OTLP export to a real OTLP/gRPC receiver (the OpenTelemetry collector protocol, served by
//! this test on 127.0.0.1 from the `opentelemetry-proto` service definitions): the spans of one
//! claim submission recorded by the application, rules and budget servers arrive sharing the
//! caller's trace id, and each service's metrics arrive under its own service name.

use opentelemetry::trace::TraceContextExt;
use subsidy_common::config::{ServiceKind, TelemetryConfig};
use subsidy_proto::application as pb;
use subsidy_testkit::otlp::Receiver;
use subsidy_testkit::requests::{contract, register, submitted, wait_claim_state};
use subsidy_testkit::*;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_reach_an_otlp_receiver() {
    let receiver = Receiver::start().await;
    let endpoint = receiver.endpoint.clone();

    // As `subsidy serve` does: the process's tracer exports over OTLP.
    let telemetry = subsidy_common::telemetry::init(
        "subsidy-otlp-test",
        &TelemetryConfig {
            log_format: "text".into(),
            log_filter: "info".into(),
            otlp_endpoint: Some(endpoint.clone()),
            metrics_listen: "off".into(),
        },
    )
    .expect("telemetry with an OTLP exporter");
    let mut overrides = quick_application(&[]);
    for kind in ServiceKind::ALL {
        overrides
            .entry(kind)
            .or_default()
            .push(("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint.clone()));
    }
    let stack = subsidy_tests::spawn_with(overrides).await;
    let mut app = stack.app().await;
    let buyer = shandong(61);
    register(&mut app, &buyer).await;

    let root = tracing::info_span!("agency.submit_claim");
    let trace_id = root.context().span().span_context().trace_id();
    let claim = submitted(
        &mut app,
        "otlp-claim",
        &buyer,
        contract("OTLP-1", &seller(1), 100_000_000),
    )
    .instrument(root)
    .await;
    wait_claim_state(&app, &claim.claim_id, pb::ClaimState::PendingReview).await;
    // Stopping the services flushes their metrics; dropping the guard flushes the spans.
    stack.shutdown().await;
    drop(telemetry);

    let in_trace: Vec<String> = receiver
        .spans()
        .into_iter()
        .filter(|span| span.trace_id == trace_id.to_bytes())
        .map(|span| span.name)
        .collect();
    for expected in [
        "subsidy.application.v1.ApplicationService/SubmitClaim",
        "subsidy.rules.v1.RulesService/EvaluateComputeVoucher",
        "subsidy.budget.v1.BudgetService/Reserve",
    ] {
        assert!(
            in_trace.iter().any(|name| name == expected),
            "{expected} reached the receiver in the caller's trace: {in_trace:?}"
        );
    }

    for kind in ServiceKind::ALL {
        let names = receiver.metric_names(&format!("subsidy-{}", kind.name()));
        assert!(
            names.iter().any(|name| name == "rpc.server.duration"),
            "{}: its RPC metrics arrived under its own name: {names:?}",
            kind.name()
        );
    }
    let budget = receiver.metric_names("subsidy-budget");
    assert!(
        budget
            .iter()
            .any(|name| name == "subsidy.budget.pool.amount"),
        "the budget's pool gauges arrived: {budget:?}"
    );
}
