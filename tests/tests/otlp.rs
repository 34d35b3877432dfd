//! OTLP export to a real OTLP/gRPC receiver (the OpenTelemetry collector protocol, served by
//! this test on 127.0.0.1 from the `opentelemetry-proto` service definitions): the spans of one
//! claim submission recorded by the application, rules and budget servers arrive sharing the
//! caller's trace id, and each service's metrics arrive under its own service name.

use std::sync::{Arc, Mutex};

use opentelemetry::trace::TraceContextExt;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::resource::v1::Resource;
use subsidy_common::config::{ServiceKind, TelemetryConfig};
use subsidy_proto::application as pb;
use subsidy_testkit::requests::{contract, register, submitted, wait_claim_state};
use subsidy_testkit::*;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// What the receiver got.
#[derive(Clone, Default)]
struct Received {
    traces: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.traces.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.metrics.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// The `service.name` of a resource.
fn service_name(resource: Option<&Resource>) -> String {
    resource
        .into_iter()
        .flat_map(|resource| &resource.attributes)
        .find(|attribute| attribute.key == "service.name")
        .and_then(|attribute| attribute.value.as_ref()?.value.as_ref())
        .map(|value| match value {
            Value::StringValue(name) => name.clone(),
            other => format!("{other:?}"),
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_reach_an_otlp_receiver() {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(received.clone()))
            .add_service(MetricsServiceServer::new(received.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

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

    let traces = received.traces.lock().unwrap().clone();
    let in_trace: Vec<String> = traces
        .iter()
        .flat_map(|request| &request.resource_spans)
        .flat_map(|resource| &resource.scope_spans)
        .flat_map(|scope| &scope.spans)
        .filter(|span| span.trace_id == trace_id.to_bytes())
        .map(|span| span.name.clone())
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

    let metrics = received.metrics.lock().unwrap().clone();
    let names_of = |service: &str| -> Vec<String> {
        metrics
            .iter()
            .flat_map(|request| &request.resource_metrics)
            .filter(|resource| service_name(resource.resource.as_ref()) == service)
            .flat_map(|resource| &resource.scope_metrics)
            .flat_map(|scope| &scope.metrics)
            .map(|metric| metric.name.clone())
            .collect()
    };
    for kind in ServiceKind::ALL {
        let names = names_of(&format!("subsidy-{}", kind.name()));
        assert!(
            names.iter().any(|name| name == "rpc.server.duration"),
            "{}: its RPC metrics arrived under its own name: {names:?}",
            kind.name()
        );
    }
    let budget = names_of("subsidy-budget");
    assert!(
        budget
            .iter()
            .any(|name| name == "subsidy.budget.pool.amount"),
        "the budget's pool gauges arrived: {budget:?}"
    );
}
