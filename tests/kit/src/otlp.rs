//! A real OTLP/gRPC receiver (the OpenTelemetry collector protocol, served on 127.0.0.1 port 0
//! from the `opentelemetry-proto` service definitions) that keeps what it is sent, and reads of
//! it: each span with the `service.name` of the resource it came under, each service's metric
//! names.

use std::sync::{Arc, Mutex};

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
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::resource::v1::Resource;
pub use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
pub use opentelemetry_proto::tonic::trace::v1::status::StatusCode;

/// What the receiver got, as it got it.
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

/// A running receiver of traces and metrics.
#[derive(Clone)]
pub struct Receiver {
    /// Its address, `http://127.0.0.1:PORT`: the OTLP endpoint to export to.
    pub endpoint: String,
    received: Received,
}

/// One span as it arrived.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    /// The `service.name` of the resource it came under.
    pub service_name: String,
    /// Its name (`package.Service/Method` for RPCs).
    pub name: String,
    /// Server, client, internal, …
    pub kind: SpanKind,
    /// Its trace id, 16 bytes.
    pub trace_id: Vec<u8>,
    /// Its span id, 8 bytes.
    pub span_id: Vec<u8>,
    /// Its parent's span id, empty for a root.
    pub parent_span_id: Vec<u8>,
    /// Its attributes, each value as text.
    pub attributes: Vec<(String, String)>,
    /// Its status: unset, OK or ERROR.
    pub status: StatusCode,
}

impl ReceivedSpan {
    /// The value of attribute `key`, as text.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }
}

/// A value as text: strings as they are, anything else in its debug form.
fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::StringValue(text)) => text.clone(),
        Some(Value::IntValue(number)) => number.to_string(),
        Some(Value::BoolValue(flag)) => flag.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(pairs: &[KeyValue]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|pair| {
            let value = pair.value.as_ref().and_then(|value| value.value.as_ref());
            (pair.key.clone(), text(value))
        })
        .collect()
}

/// The `service.name` of a resource (empty without one).
pub fn service_name(resource: Option<&Resource>) -> String {
    resource
        .into_iter()
        .flat_map(|resource| attributes(&resource.attributes))
        .find(|(key, _)| key == "service.name")
        .map(|(_, value)| value)
        .unwrap_or_default()
}

impl Receiver {
    /// Starts a receiver on a port of its own.
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OTLP receiver");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let received = Received::default();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(received.clone()))
                .add_service(MetricsServiceServer::new(received.clone()))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Receiver { endpoint, received }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        let traces = self.received.traces.lock().unwrap();
        let mut spans = Vec::new();
        for resource in traces.iter().flat_map(|request| &request.resource_spans) {
            let service_name = service_name(resource.resource.as_ref());
            for span in resource.scope_spans.iter().flat_map(|scope| &scope.spans) {
                spans.push(ReceivedSpan {
                    service_name: service_name.clone(),
                    name: span.name.clone(),
                    kind: span.kind(),
                    trace_id: span.trace_id.clone(),
                    span_id: span.span_id.clone(),
                    parent_span_id: span.parent_span_id.clone(),
                    attributes: attributes(&span.attributes),
                    status: span
                        .status
                        .as_ref()
                        .map_or(StatusCode::Unset, |status| status.code()),
                });
            }
        }
        spans
    }

    /// The names of the metrics received under the resource named `service_name`.
    pub fn metric_names(&self, service_name: &str) -> Vec<String> {
        let metrics = self.received.metrics.lock().unwrap();
        metrics
            .iter()
            .flat_map(|request| &request.resource_metrics)
            .filter(|resource| self::service_name(resource.resource.as_ref()) == service_name)
            .flat_map(|resource| &resource.scope_metrics)
            .flat_map(|scope| &scope.metrics)
            .map(|metric| metric.name.clone())
            .collect()
    }
}
