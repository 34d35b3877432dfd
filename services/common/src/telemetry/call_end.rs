//! When a gRPC call ends, and with which status: at the response headers for an answer that is
//! only headers (every refusal of a unary call), otherwise at the trailers that close the
//! response body, which is where a stream that fails after sending messages puts its status.
//!
//! [`watch`] wraps a response so that its end is told once, to a closure that records it (on a
//! span, in a metric) and that keeps alive what it holds (a span stays open until the body has
//! ended, so a streaming call's span lasts as long as the stream).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http_body::{Body, Frame, SizeHint};

/// Told once how a call ended: its `grpc-status` code, or `None` when it ended without one (a
/// transport error, a body that broke off).
pub type OnEnd = Box<dyn FnOnce(Option<tonic::Code>) + Send>;

/// Watches how the call answered by `result` ends and tells `on_end` once: at once when the call
/// failed before an answer or the answer carries its status in the headers; when the body ends
/// otherwise (the trailers' status; `CANCELLED` when the body is dropped before its end, the
/// caller having gone away).
pub fn watch<R, E>(
    result: Result<http::Response<R>, E>,
    on_end: OnEnd,
) -> Result<http::Response<StatusBody<R>>, E> {
    match result {
        Err(error) => {
            on_end(None);
            Err(error)
        }
        Ok(response) => {
            let on_end = match header_status(response.headers()) {
                Some(code) => {
                    on_end(Some(code));
                    None
                }
                None => Some(on_end),
            };
            Ok(response.map(|inner| StatusBody { inner, on_end }))
        }
    }
}

/// The status in `headers` (or trailers), when they carry one.
fn header_status(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let value = headers.get("grpc-status")?;
    let code = value
        .to_str()
        .ok()
        .and_then(|text| text.parse::<i32>().ok())
        .map_or(tonic::Code::Unknown, tonic::Code::from_i32);
    Some(code)
}

pin_project_lite::pin_project! {
    /// A response body that tells how the call ended when its trailers pass (see [`watch`]).
    pub struct StatusBody<B> {
        #[pin]
        inner: B,
        on_end: Option<OnEnd>,
    }

    // Dropped before its end: the reader went away.
    impl<B> PinnedDrop for StatusBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(on_end) = this.on_end.take() {
                on_end(Some(tonic::Code::Cancelled));
            }
        }
    }
}

impl<B> std::fmt::Debug for StatusBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusBody")
            .field("watching", &self.on_end.is_some())
            .finish_non_exhaustive()
    }
}

impl<B: Body> Body for StatusBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        let ended = match &frame {
            Some(Ok(frame)) if frame.is_trailers() => Some(Some(
                frame
                    .trailers_ref()
                    .and_then(header_status)
                    .unwrap_or(tonic::Code::Unknown),
            )),
            Some(Err(_)) => Some(None),
            // The end without trailers: the status was in the headers (told already), or there
            // was none, which a gRPC client reads as UNKNOWN.
            None => Some(Some(tonic::Code::Unknown)),
            // A reader stops at `is_end_stream` without asking for more: a body that ends
            // without trailers ends here.
            Some(Ok(_)) if this.inner.is_end_stream() => Some(Some(tonic::Code::Unknown)),
            Some(Ok(_)) => None,
        };
        if let Some(code) = ended
            && let Some(on_end) = this.on_end.take()
        {
            on_end(code);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::BodyExt as _;
    use std::sync::{Arc, Mutex};

    type Frames = Vec<Result<Frame<Bytes>, std::io::Error>>;

    fn response(headers: &[(&str, &str)], frames: Frames) -> http::Response<impl Body> {
        let mut builder = http::Response::builder();
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder
            .body(http_body_util::StreamBody::new(futures::stream::iter(
                frames,
            )))
            .expect("a response")
    }

    fn trailers(code: &str) -> Frame<Bytes> {
        let mut map = http::HeaderMap::new();
        map.insert("grpc-status", code.parse().expect("a header value"));
        Frame::trailers(map)
    }

    /// Watches `response` and returns what `on_end` was told, read after `read` ran on it.
    async fn ended<R: Body + Unpin>(
        response: http::Response<R>,
        read: impl AsyncFnOnce(StatusBody<R>),
    ) -> Vec<Option<tonic::Code>> {
        let told = Arc::new(Mutex::new(Vec::new()));
        let sink = told.clone();
        let watched = watch::<_, ()>(
            Ok(response),
            Box::new(move |code| sink.lock().expect("not poisoned").push(code)),
        )
        .expect("an answer");
        read(watched.into_body()).await;
        told.lock().expect("not poisoned").clone()
    }

    #[tokio::test]
    async fn a_stream_that_fails_after_messages_ends_with_its_trailers_status() {
        let body = response(
            &[],
            vec![
                Ok(Frame::data(Bytes::from_static(b"message"))),
                Ok(trailers("14")),
            ],
        );
        let told = ended(body, async |body| {
            let _ = body.collect().await;
        })
        .await;
        assert_eq!(told, vec![Some(tonic::Code::Unavailable)]);
    }

    #[tokio::test]
    async fn a_trailers_only_answer_is_told_at_the_headers_and_only_once() {
        let body = response(&[("grpc-status", "3")], vec![]);
        let told = ended(body, async |body| {
            let _ = body.collect().await;
        })
        .await;
        assert_eq!(told, vec![Some(tonic::Code::InvalidArgument)]);
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_is_cancelled_and_a_broken_one_has_no_status() {
        let body = response(
            &[],
            vec![
                Ok(Frame::data(Bytes::from_static(b"first"))),
                Ok(trailers("0")),
            ],
        );
        let told = ended(body, async |mut body| {
            let _ = body.frame().await;
        })
        .await;
        assert_eq!(told, vec![Some(tonic::Code::Cancelled)]);

        let body = response(
            &[],
            vec![
                Ok(Frame::data(Bytes::from_static(b"first"))),
                Err(std::io::Error::other("reset")),
            ],
        );
        let told = ended(body, async |body| {
            let _ = body.collect().await;
        })
        .await;
        assert_eq!(told, vec![None]);
    }

    #[tokio::test]
    async fn a_failure_before_any_answer_has_no_status() {
        let told = Arc::new(Mutex::new(Vec::new()));
        let sink = told.clone();
        let result = watch::<http_body_util::Empty<Bytes>, &str>(
            Err("refused"),
            Box::new(move |code| sink.lock().expect("not poisoned").push(code)),
        );
        assert!(result.is_err());
        assert_eq!(*told.lock().expect("not poisoned"), vec![None]);
    }
}

#[cfg(test)]
mod spans {
    //! The client and server layers through a real tracing pipeline: a stream that fails after
    //! its messages leaves its span with the trailers' code, and the span lasts until the end.

    use bytes::Bytes;
    use http_body::Frame;
    use http_body_util::BodyExt as _;
    use opentelemetry::Value;
    use opentelemetry::trace::{Status, TracerProvider as _};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
    use tower::{Layer as _, Service as _, ServiceExt as _};
    use tracing::Instrument as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    use crate::config::ServiceKind;

    const PATH: &str = "/subsidy.notification.v1.NotificationService/StreamEvents";

    /// A peer that answers with one message and then fails the stream: status 14 in the
    /// trailers, as a stream whose database went away does.
    async fn failing_stream(
        _request: http::Request<()>,
    ) -> Result<
        http::Response<impl http_body::Body<Data = Bytes, Error = std::io::Error>>,
        std::io::Error,
    > {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("14"));
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
            Ok(Frame::data(Bytes::from_static(b"event"))),
            Ok(Frame::trailers(trailers)),
        ];
        Ok(http::Response::new(http_body_util::StreamBody::new(
            futures::stream::iter(frames),
        )))
    }

    fn request() -> http::Request<()> {
        http::Request::builder()
            .uri(format!("http://peer{PATH}"))
            .body(())
            .expect("a request")
    }

    fn pipeline() -> (
        InMemorySpanExporter,
        SdkTracerProvider,
        impl tracing::Subscriber,
    ) {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("call-end-test")));
        (exporter, provider, subscriber)
    }

    fn finished(exporter: &InMemorySpanExporter, name: &str) -> Vec<SpanData> {
        exporter
            .get_finished_spans()
            .expect("the exporter answers")
            .into_iter()
            .filter(|span| span.name == name)
            .collect()
    }

    fn code_of(span: &SpanData) -> Option<Value> {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == "rpc.grpc.status_code")
            .map(|kv| kv.value.clone())
    }

    /// Reads `response`'s body to its end, checking that the call's span stays open until then,
    /// and asserts the ended span carries code 14 and status ERROR.
    async fn span_ends_with_the_trailers<B>(
        (exporter, provider): (&InMemorySpanExporter, &SdkTracerProvider),
        response: http::Response<B>,
    ) where
        B: http_body::Body + Unpin,
        B::Error: std::fmt::Debug,
    {
        let name = PATH.trim_start_matches('/');
        assert!(
            finished(exporter, name).is_empty(),
            "the span lasts while the stream is read"
        );
        let mut body = response.into_body();
        while body.frame().await.is_some() {}
        drop(body);
        let _ = provider.force_flush();
        let spans = finished(exporter, name);
        assert_eq!(spans.len(), 1, "{spans:?}");
        assert_eq!(code_of(&spans[0]), Some(Value::I64(14)));
        // UNAVAILABLE is an error on either side.
        assert!(
            matches!(spans[0].status, Status::Error { .. }),
            "{:?}",
            spans[0]
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_client_span_takes_the_status_of_a_stream_failing_after_messages() {
        let (exporter, provider, subscriber) = pipeline();
        let _guard = tracing::subscriber::set_default(subscriber);
        let mut client = crate::telemetry::ClientSpans::new(
            ServiceKind::Budget,
            tower::service_fn(failing_stream),
        );
        let response = client
            .ready()
            .await
            .expect("ready")
            .call(request())
            .await
            .expect("headers arrive");
        span_ends_with_the_trailers((&exporter, &provider), response).await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_server_span_takes_the_status_of_a_stream_failing_after_messages() {
        let (exporter, provider, subscriber) = pipeline();
        let _guard = tracing::subscriber::set_default(subscriber);
        let meter = opentelemetry::global::meter("call-end-test");
        let mut server = crate::metrics::RpcMetricsLayer::new(&meter, "notification")
            .layer(tower::service_fn(failing_stream));
        let span = crate::telemetry::server_span(ServiceKind::Notification, &request());
        let response = server
            .ready()
            .await
            .expect("ready")
            .call(request())
            .instrument(span)
            .await
            .expect("headers go out");
        span_ends_with_the_trailers((&exporter, &provider), response).await;
    }
}
