//! Spans of several services in one process (`subsidy dev`), each exported under its own
//! service's name.
//!
//! One tracer provider serves the whole process (`tracing-opentelemetry` sends every span
//! through one tracer), so the service a span belongs to is decided per span, in two steps:
//!
//! 1. [`ServiceAttribution`], a span processor, gives every span a service when it starts: the
//!    one named by its own [`SERVICE_ATTRIBUTE`] (server spans carry the service serving the
//!    call, client spans the service calling, a background task's root span its service), or
//!    else its in-process parent's, which it then records on the span. It keeps the service of
//!    each open span by span id, until the span ends. (The tracing registry ends a parent only
//!    after its children, so a child always finds its open parent.) A parent in another
//!    process, or one that is not sampled, gives nothing.
//! 2. [`ServiceExporter`] splits each batch of finished spans by that attribute and exports
//!    each part through an exporter of its own whose resource names the service
//!    (`service.name` `subsidy-<service>`). Spans of no service (start-up, a caller's span
//!    created in this process) go out under the process's own name.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use opentelemetry::trace::{Span as _, SpanId, TraceContextExt as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};

use crate::config::ServiceKind;

/// The span attribute naming the service (its short name, `budget`) a span belongs to. Spans
/// declare it as the `tracing` field `subsidy.service`.
pub const SERVICE_ATTRIBUTE: &str = "subsidy.service";

/// Most open spans whose service is remembered for their children; beyond it a new span's
/// children fall back to the process's name (a bound, not a working size: open spans are the
/// calls and tasks in flight).
pub const OPEN_SPANS_MAX: usize = 100_000;

/// The `service.name` of `kind`'s spans and metrics.
pub fn service_name(kind: ServiceKind) -> String {
    format!("subsidy-{}", kind.name())
}

/// The service named by a span's [`SERVICE_ATTRIBUTE`], if it has one naming a service.
fn service_of(attributes: &[KeyValue]) -> Option<ServiceKind> {
    attributes
        .iter()
        .find(|attribute| attribute.key.as_str() == SERVICE_ATTRIBUTE)
        .and_then(|attribute| ServiceKind::parse(&attribute.value.as_str()))
}

/// A span processor that gives every span its service (see the module's header), then hands
/// it on to `inner`.
#[derive(Debug)]
pub struct ServiceAttribution<P> {
    /// The service of each open span that has one.
    open: Mutex<HashMap<SpanId, ServiceKind>>,
    inner: P,
}

impl<P> ServiceAttribution<P> {
    /// Attributes spans, then passes them to `inner` (the exporting processor).
    pub fn new(inner: P) -> Self {
        ServiceAttribution {
            open: Mutex::new(HashMap::new()),
            inner,
        }
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<SpanId, ServiceKind>> {
        // The map holds no invariant a panic elsewhere could break halfway.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<P: SpanProcessor> SpanProcessor for ServiceAttribution<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        let own = span
            .exported_data()
            .and_then(|data| service_of(&data.attributes));
        let parent = cx.span().span_context().clone();
        let inherited = || {
            (parent.is_valid() && !parent.is_remote())
                .then(|| self.open().get(&parent.span_id()).copied())
                .flatten()
        };
        if let Some(service) = own.or_else(inherited) {
            if own.is_none() {
                span.set_attribute(KeyValue::new(SERVICE_ATTRIBUTE, service.name()));
            }
            let mut open = self.open();
            if open.len() < OPEN_SPANS_MAX {
                open.insert(span.span_context().span_id(), service);
            }
        }
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        self.open().remove(&span.span_context.span_id());
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// An exporter that sends each service's spans through an exporter of its own, whose resource
/// names that service; spans of no service go through one more, under the process's resource.
#[derive(Debug)]
pub struct ServiceExporter<E> {
    /// One exporter per service, and `None`'s for spans of no service.
    exporters: HashMap<Option<ServiceKind>, E>,
}

impl<E> ServiceExporter<E> {
    /// Makes the exporter of each service and the one for spans of no service with `make`.
    pub fn new<X>(mut make: impl FnMut() -> Result<E, X>) -> Result<Self, X> {
        let mut exporters = HashMap::new();
        for service in ServiceKind::ALL.map(Some).into_iter().chain([None]) {
            exporters.insert(service, make()?);
        }
        Ok(ServiceExporter { exporters })
    }
}

/// The first failure of `results`, if any.
fn first_failure(results: impl IntoIterator<Item = OTelSdkResult>) -> OTelSdkResult {
    results.into_iter().find(Result::is_err).unwrap_or(Ok(()))
}

impl<E: SpanExporter> SpanExporter for ServiceExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let mut parts: HashMap<Option<ServiceKind>, Vec<SpanData>> = HashMap::new();
        for span in batch {
            parts
                .entry(service_of(&span.attributes))
                .or_default()
                .push(span);
        }
        // Each inner exporter gets at most one call at a time, as the trait asks: this export
        // is never called concurrently with itself.
        let exports = parts.into_iter().map(|(service, spans)| {
            self.exporters
                .get(&service)
                .expect("`new` makes an exporter for every service and for none")
                .export(spans)
        });
        first_failure(futures::future::join_all(exports).await)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        first_failure(
            self.exporters
                .values()
                .map(|exporter| exporter.shutdown_with_timeout(timeout))
                .collect::<Vec<_>>(),
        )
    }

    fn force_flush(&self) -> OTelSdkResult {
        first_failure(
            self.exporters
                .values()
                .map(SpanExporter::force_flush)
                .collect::<Vec<_>>(),
        )
    }

    /// Each service's exporter gets the process's `resource` with its own `service.name`;
    /// the exporter of spans of no service gets `resource` as it is.
    fn set_resource(&mut self, resource: &Resource) {
        for (service, exporter) in &mut self.exporters {
            match service {
                Some(kind) => exporter.set_resource(&renamed(resource, &service_name(*kind))),
                None => exporter.set_resource(resource),
            }
        }
    }
}

/// `resource` with `service.name` set to `name`.
fn renamed(resource: &Resource, name: &str) -> Resource {
    let mut builder = Resource::builder_empty().with_attributes(
        resource
            .iter()
            .map(|(key, value)| KeyValue::new(key.clone(), value.clone())),
    );
    if let Some(schema_url) = resource.schema_url() {
        builder = builder.with_schema_url([], schema_url.to_owned());
    }
    builder.with_service_name(name.to_owned()).build()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use opentelemetry::trace::{SpanContext, Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::trace::{SdkTracerProvider, SimpleSpanProcessor};

    use super::*;

    /// An inner exporter recording each span it exports with its resource's `service.name`
    /// into a list shared by all of them.
    #[derive(Debug)]
    struct Recorder {
        exported: Arc<Mutex<Vec<(String, String)>>>,
        resource_name: String,
    }

    impl SpanExporter for Recorder {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            let mut exported = self.exported.lock().unwrap();
            exported.extend(
                batch
                    .into_iter()
                    .map(|span| (self.resource_name.clone(), span.name.into())),
            );
            Ok(())
        }

        fn set_resource(&mut self, resource: &Resource) {
            self.resource_name = resource
                .get(&opentelemetry::Key::from_static_str("service.name"))
                .map(|value| value.to_string())
                .unwrap_or_default();
        }
    }

    #[test]
    fn each_span_is_exported_under_the_service_it_or_its_local_parent_names() {
        // Proves: a span naming its service goes out under `subsidy-<service>`, a child without
        // one under its parent's (recorded on it), a child of a remote parent and a span of no
        // service under the process's name, and a child started after its parent ended finds
        // nothing left behind.
        let exported = Arc::new(Mutex::new(Vec::new()));
        let exporter = ServiceExporter::new(|| {
            Ok::<_, ()>(Recorder {
                exported: exported.clone(),
                resource_name: String::new(),
            })
        })
        .unwrap();
        let provider = SdkTracerProvider::builder()
            .with_resource(Resource::builder().with_service_name("subsidy-dev").build())
            .with_span_processor(ServiceAttribution::new(SimpleSpanProcessor::new(exporter)))
            .build();
        let tracer = provider.tracer("test");

        let server = tracer
            .span_builder("rules.server")
            .with_attributes([KeyValue::new(SERVICE_ATTRIBUTE, "rules")])
            .start(&tracer);
        let server_cx = Context::current_with_span(server);
        let child = tracer.start_with_context("rules.child", &server_cx);
        let child_cx = Context::current_with_span(child);
        tracer
            .start_with_context("rules.grandchild", &child_cx)
            .end();
        let client = tracer
            .span_builder("application.client")
            .with_attributes([KeyValue::new(SERVICE_ATTRIBUTE, "application")])
            .start_with_context(&tracer, &child_cx);
        drop(client);
        // The server span's own context as a propagator extracts it: a parent in another
        // process, though the same span id is open here.
        let local = server_cx.span().span_context().clone();
        let remote = Context::new().with_remote_span_context(SpanContext::new(
            local.trace_id(),
            local.span_id(),
            local.trace_flags(),
            true,
            local.trace_state().clone(),
        ));
        tracer.start_with_context("remote.child", &remote).end();
        tracer.start("startup").end();
        child_cx.span().end();
        server_cx.span().end();
        tracer.start_with_context("late.child", &server_cx).end();
        drop((child_cx, server_cx));

        let mut exported = exported.lock().unwrap().clone();
        exported.sort();
        let expected = [
            ("subsidy-application", "application.client"),
            ("subsidy-dev", "late.child"),
            ("subsidy-dev", "remote.child"),
            ("subsidy-dev", "startup"),
            ("subsidy-rules", "rules.child"),
            ("subsidy-rules", "rules.grandchild"),
            ("subsidy-rules", "rules.server"),
        ]
        .map(|(service, span)| (service.to_owned(), span.to_owned()));
        assert_eq!(exported, expected);
        let _ = provider.shutdown();
    }

    #[test]
    fn a_renamed_resource_keeps_the_other_attributes() {
        // Proves: a service's resource is the process's with only `service.name` changed.
        let resource = Resource::builder_empty()
            .with_service_name("subsidy-dev")
            .with_attribute(KeyValue::new("deployment.environment.name", "dev"))
            .build();
        let renamed = renamed(&resource, "subsidy-budget");
        let get = |key: &'static str| {
            renamed
                .get(&opentelemetry::Key::from_static_str(key))
                .map(|value| value.to_string())
        };
        assert_eq!(get("service.name").as_deref(), Some("subsidy-budget"));
        assert_eq!(get("deployment.environment.name").as_deref(), Some("dev"));
        assert_eq!(renamed.len(), 2);
    }
}
