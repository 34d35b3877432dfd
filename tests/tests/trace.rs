//! One trace spans a call that crosses services: the caller's W3C trace context reaches the
//! application service, and the application service's calls, each a client span, carry it on to
//! rules and budget.

use opentelemetry::trace::{SpanKind, TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use subsidy_common::config::ServiceKind;
use subsidy_proto::application as app;
use subsidy_proto::application::application_service_client::ApplicationServiceClient;
use subsidy_proto::google::r#type::{Date, Money};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_id_spans_a_claim_submission_across_application_rules_and_budget() {
    // Proves: spans recorded by the application, rules and budget servers for one client call
    // share the client's trace id, and the server spans are children of the client's span; the
    // application's call to rules is a client span (with the RPC attributes) inside its
    // SubmitClaim span, and the parent of the rules server's span.
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::INFO)
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("trace-test")));
    tracing::subscriber::set_global_default(subscriber)
        .expect("the only subscriber of this test binary");

    let stack = subsidy_tests::spawn().await;
    let channel = stack.channel(ServiceKind::Application).await;
    // The kit's channel carries the test's trace context with every call.
    let mut client = ApplicationServiceClient::new(channel);
    let buyer = subsidy_common::uscc::complete("91370100MA0000001");
    subsidy_testkit::auth::named(buyer.as_str());
    let seller = subsidy_common::uscc::complete("91370200MA0000002");

    let root = tracing::info_span!("agency.submit_claim");
    let trace_id = root.context().span().span_context().trace_id();
    async {
        client
            .register_enterprise(app::RegisterEnterpriseRequest {
                request_id: "trace-enterprise".into(),
                uscc: buyer.to_string(),
                name: "济南智算应用有限公司".into(),
                contact_email: "finance@example.com".into(),
                contact_phone: String::new(),
                registration_division_code: "370100".into(),
            })
            .await
            .expect("register the enterprise");
        client
            .submit_claim(app::SubmitClaimRequest {
                request_id: "trace-claim".into(),
                enterprise_uscc: buyer.to_string(),
                invoices: Vec::new(),
                contract: Some(app::ComputeContract {
                    contract_number: "SD-AI-2025-0001".into(),
                    seller_uscc: seller.to_string(),
                    seller_name: "青岛智算中心".into(),
                    signing_date: Some(Date {
                        year: 2025,
                        month: 6,
                        day: 1,
                    }),
                    total: Some(Money {
                        currency_code: "CNY".into(),
                        units: 1_000_000,
                        nanos: 0,
                    }),
                    compute_type: app::ComputeType::AiAccelerator as i32,
                    data_center_division_code: "370200".into(),
                    data_center_name: "Qingdao AI computing center".into(),
                    related_party: Some(app::RelatedPartyDeclaration {
                        related: false,
                        relationship_description: String::new(),
                    }),
                    scenario_description: "model training for industrial inspection".into(),
                    attachments: vec![],
                }),
            })
            .await
            .expect("submit the claim");
    }
    .instrument(root)
    .await;

    let expected = [
        "subsidy.application.v1.ApplicationService/SubmitClaim",
        "subsidy.rules.v1.RulesService/EvaluateComputeVoucher",
        "subsidy.budget.v1.BudgetService/Reserve",
    ];
    // A server span ends when the server's response future is dropped, which can be a moment
    // after the client already holds the response (and the budget's Reserve is made by funding,
    // which may finish after SubmitClaim answered): wait for the spans, bounded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let spans = loop {
        let _ = provider.force_flush();
        let spans = exporter.get_finished_spans().unwrap();
        let complete = expected.iter().all(|name| {
            spans
                .iter()
                .any(|s| s.span_context.trace_id() == trace_id && s.name == *name)
        });
        if complete || std::time::Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let in_trace: Vec<&str> = spans
        .iter()
        .filter(|s| s.span_context.trace_id() == trace_id)
        .map(|s| s.name.as_ref())
        .collect();
    for expected in expected {
        assert!(
            in_trace.contains(&expected),
            "{expected} is in the client's trace: {in_trace:?}"
        );
    }
    let of_kind = |name: &str, kind: SpanKind| {
        spans
            .iter()
            .find(|s| {
                s.span_context.trace_id() == trace_id && s.name == name && s.span_kind == kind
            })
            .unwrap_or_else(|| panic!("a {kind:?} span {name} in the trace: {in_trace:?}"))
    };
    let evaluate = "subsidy.rules.v1.RulesService/EvaluateComputeVoucher";
    let (rules_span, call_span) = (
        of_kind(evaluate, SpanKind::Server),
        of_kind(evaluate, SpanKind::Client),
    );
    let submit_span = of_kind(
        "subsidy.application.v1.ApplicationService/SubmitClaim",
        SpanKind::Server,
    );
    assert_eq!(
        rules_span.parent_span_id,
        call_span.span_context.span_id(),
        "the rules span is a child of the application's client span of the call"
    );
    assert_eq!(
        call_span.parent_span_id,
        submit_span.span_context.span_id(),
        "the application's call is made inside its SubmitClaim span"
    );
    let attribute = |key: &str| {
        call_span
            .attributes
            .iter()
            .find(|pair| pair.key.as_str() == key)
            .map(|pair| pair.value.to_string())
    };
    assert_eq!(attribute("rpc.system").as_deref(), Some("grpc"));
    assert_eq!(
        attribute("rpc.service").as_deref(),
        Some("subsidy.rules.v1.RulesService")
    );
    assert_eq!(
        attribute("rpc.method").as_deref(),
        Some("EvaluateComputeVoucher")
    );
    assert_eq!(attribute("rpc.grpc.status_code").as_deref(), Some("0"));
    stack.shutdown().await;
}
