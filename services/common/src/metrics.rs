//! Metrics of a service, through OpenTelemetry: a meter provider per service (so that the four
//! services of one `subsidy dev` process keep their own), read by a Prometheus registry served
//! at `GET /metrics` on the service's metrics port ([`serve_scrape`]) and, when an OTLP endpoint
//! is configured, exported over OTLP as well.
//!
//! - RPCs: a tower layer recording the duration and count of every call by method and status,
//!   as the `rpc.server.duration` histogram (milliseconds). Being the one reader of a call's
//!   outcome, it also records the status on the call's server span
//!   ([`crate::telemetry::record_server_status`]).
//! - The database pool: `subsidy.db.connections` by state (`used`, `idle`) and the pool's
//!   `subsidy.db.connections.max`.
//! - The service's own gauges ([`Gauges`]): values read from its database (pool amounts,
//!   claims by state, deliveries by state, …), refreshed before every scrape and every
//!   [`GAUGE_REFRESH_MS`] for OTLP. Every replica reads the same database and reports the same
//!   values: aggregate them with `max`, not `sum`.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, Meter, MeterProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use tokio::net::TcpListener;

use crate::db::{Db, DbError};

/// How often the service's gauges are read for OTLP export, in milliseconds (a scrape reads
/// them anew).
pub const GAUGE_REFRESH_MS: u64 = 15_000;
/// Longest a read of the gauges may take before a scrape answers with the last values, in
/// milliseconds.
pub const GAUGE_READ_TIMEOUT_MS: u64 = 2_000;

/// A gauge a service declares: its OpenTelemetry name and meaning.
#[derive(Clone, Copy, Debug)]
pub struct GaugeSpec {
    /// The name, e.g. `subsidy.budget.pool.amount` (`subsidy_budget_pool_amount` in
    /// Prometheus).
    pub name: &'static str,
    /// What it measures, with its unit.
    pub description: &'static str,
}

/// One value of a declared gauge.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    /// The gauge's name, one of the declared [`GaugeSpec`]s.
    pub name: &'static str,
    /// The attributes (Prometheus labels).
    pub labels: Vec<(&'static str, String)>,
    /// The value.
    pub value: i64,
}

/// Reads all the service's gauges at once.
pub type ReadGauges =
    Arc<dyn Fn() -> BoxFuture<'static, Result<Vec<Reading>, DbError>> + Send + Sync>;

/// The gauges a service declares and how they are read.
#[derive(Clone)]
pub struct Gauges {
    specs: &'static [GaugeSpec],
    read: Option<ReadGauges>,
}

impl std::fmt::Debug for Gauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gauges")
            .field("specs", &self.specs)
            .finish()
    }
}

impl Default for Gauges {
    fn default() -> Self {
        Gauges::none()
    }
}

impl Gauges {
    /// No gauges of the service's own.
    pub fn none() -> Self {
        Gauges {
            specs: &[],
            read: None,
        }
    }

    /// The gauges `specs`, read together by `read`.
    pub fn new(specs: &'static [GaugeSpec], read: ReadGauges) -> Self {
        Gauges {
            specs,
            read: Some(read),
        }
    }

    /// The gauges `specs` of a service over its database `db`: on every refresh `fetch` (a
    /// query of the service's storage) reads what they need, and `render` turns that into
    /// readings at the time read just after (microseconds since the epoch).
    pub fn over_db<T: 'static, E, Fetched>(
        specs: &'static [GaugeSpec],
        db: Db,
        fetch: fn(Db) -> Fetched,
        render: fn(&T, i64) -> Vec<Reading>,
    ) -> Self
    where
        Fetched: Future<Output = Result<T, E>> + Send + 'static,
        E: Into<DbError>,
    {
        Gauges::new(
            specs,
            Arc::new(move || {
                let fetched = fetch(db.clone());
                Box::pin(async move {
                    let tallies = fetched.await.map_err(Into::into)?;
                    Ok(render(&tallies, crate::time::now_us()))
                })
            }),
        )
    }
}

/// The count of `key` among rows counted by key (a `GROUP BY`), 0 when no row has it.
pub fn count_of<K: PartialEq<Q>, Q: ?Sized>(rows: &[(K, i64)], key: &Q) -> i64 {
    rows.iter()
        .find(|(k, _)| k == key)
        .map_or(0, |(_, count)| *count)
}

/// Whole seconds from `since_us` to `now_us` (microseconds since the epoch), 0 when `since_us`
/// is not before `now_us`.
pub fn seconds_since(since_us: i64, now_us: i64) -> i64 {
    (now_us - since_us).max(0) / 1_000_000
}

/// Why metrics could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// An exporter could not be built.
    #[error("cannot set up metrics export: {0}")]
    Exporter(String),
}

/// The last values read, by gauge name.
type Snapshot = Arc<Mutex<BTreeMap<&'static str, Vec<(Vec<KeyValue>, i64)>>>>;

/// One service's metrics: its meter provider, the Prometheus registry that reads it, and its
/// gauges.
pub struct ServiceMetrics {
    provider: SdkMeterProvider,
    registry: prometheus::Registry,
    snapshot: Snapshot,
    read: Option<ReadGauges>,
    db: Option<Db>,
    /// One read of the gauges at a time.
    reading: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for ServiceMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceMetrics").finish_non_exhaustive()
    }
}

impl ServiceMetrics {
    /// Sets up the metrics of `service` (its short name): a Prometheus reader, an OTLP exporter
    /// when `otlp_endpoint` is set, the database pool's gauges when `db` is given, and
    /// `gauges`.
    pub fn new(
        service: &'static str,
        otlp_endpoint: Option<&str>,
        db: Option<Db>,
        gauges: Gauges,
    ) -> Result<Self, MetricsError> {
        let registry = prometheus::Registry::new();
        let prometheus = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .build()
            .map_err(|e| MetricsError::Exporter(e.to_string()))?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(format!("subsidy-{service}"))
            .build();
        let mut builder = SdkMeterProvider::builder()
            .with_reader(prometheus)
            .with_resource(resource);
        if let Some(endpoint) = otlp_endpoint {
            let exporter = opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.to_owned())
                .build()
                .map_err(|e| MetricsError::Exporter(e.to_string()))?;
            builder = builder.with_periodic_exporter(exporter);
        }
        let provider = builder.build();
        let snapshot: Snapshot = Arc::default();
        let meter = provider.meter("subsidy");
        let mut specs: Vec<GaugeSpec> = gauges.specs.to_vec();
        if db.is_some() {
            specs.extend(DB_GAUGES);
        }
        for spec in specs {
            let snapshot = snapshot.clone();
            meter
                .i64_observable_gauge(spec.name)
                .with_description(spec.description)
                .with_callback(move |observer| {
                    let snapshot = snapshot
                        .lock()
                        .expect("the snapshot lock is never poisoned");
                    for (labels, value) in snapshot.get(spec.name).into_iter().flatten() {
                        observer.observe(*value, labels);
                    }
                })
                .build();
        }
        Ok(ServiceMetrics {
            provider,
            registry,
            snapshot,
            read: gauges.read,
            db,
            reading: tokio::sync::Mutex::new(()),
        })
    }

    /// The meter the service's instruments are made with.
    pub fn meter(&self) -> Meter {
        self.provider.meter("subsidy")
    }

    /// Reads the gauges anew (bounded by [`GAUGE_READ_TIMEOUT_MS`]; on failure or time-out
    /// the last values stay, and the failure is logged).
    pub async fn refresh(&self) {
        let _one = self.reading.lock().await;
        let mut readings = Vec::new();
        if let Some(db) = &self.db {
            let size = i64::from(db.pool.size());
            let idle = i64::try_from(db.pool.num_idle()).unwrap_or(i64::MAX);
            let max = i64::from(db.pool.options().get_max_connections());
            readings.push(reading(DB_CONNECTIONS, &[("state", "used")], size - idle));
            readings.push(reading(DB_CONNECTIONS, &[("state", "idle")], idle));
            readings.push(reading(DB_CONNECTIONS_MAX, &[], max));
        }
        // Whether the service's own values were read; when not, its last ones stay.
        let mut complete = true;
        if let Some(read) = &self.read {
            let timeout = Duration::from_millis(GAUGE_READ_TIMEOUT_MS);
            match tokio::time::timeout(timeout, read()).await {
                Ok(Ok(values)) => readings.extend(values),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "reading the gauges failed; the last values stay");
                    complete = false;
                }
                Err(_) => {
                    tracing::warn!(
                        timeout_ms = GAUGE_READ_TIMEOUT_MS,
                        "reading the gauges timed out; the last values stay"
                    );
                    complete = false;
                }
            }
        }
        let mut fresh: BTreeMap<&'static str, Vec<(Vec<KeyValue>, i64)>> = BTreeMap::new();
        for Reading {
            name,
            labels,
            value,
        } in readings
        {
            let labels = labels
                .into_iter()
                .map(|(key, value)| KeyValue::new(key, value))
                .collect();
            fresh.entry(name).or_default().push((labels, value));
        }
        let mut snapshot = self
            .snapshot
            .lock()
            .expect("the snapshot lock is never poisoned");
        if complete {
            *snapshot = fresh;
        } else {
            snapshot.extend(fresh);
        }
    }

    /// The Prometheus text exposition of every metric, with the gauges read anew.
    pub async fn render(&self) -> String {
        self.refresh().await;
        let families = self.registry.gather();
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_else(|error| {
                tracing::error!(%error, "encoding the metrics failed");
                String::new()
            })
    }

    /// Flushes and stops the OTLP export.
    pub fn shutdown(&self) {
        let _ = self.provider.shutdown();
    }
}

/// Connections of the service's database pool, by state.
const DB_CONNECTIONS: &str = "subsidy.db.connections";
/// Size limit of the service's database pool.
const DB_CONNECTIONS_MAX: &str = "subsidy.db.connections.max";
const DB_GAUGES: [GaugeSpec; 2] = [
    GaugeSpec {
        name: DB_CONNECTIONS,
        description: "Connections of the service's database pool, by state (used, idle)",
    },
    GaugeSpec {
        name: DB_CONNECTIONS_MAX,
        description: "Largest size of the service's database pool",
    },
];

/// A reading of `name` with `labels`.
pub fn reading(name: &'static str, labels: &[(&'static str, &str)], value: i64) -> Reading {
    Reading {
        name,
        labels: labels
            .iter()
            .map(|(key, value)| (*key, (*value).to_owned()))
            .collect(),
        value,
    }
}

/// Refreshes the gauges every [`GAUGE_REFRESH_MS`] (for the OTLP export) until `stop` fires.
pub async fn refresh_periodically(
    metrics: Arc<ServiceMetrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(Duration::from_millis(GAUGE_REFRESH_MS));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => metrics.refresh().await,
            _ = stop.changed() => return,
        }
    }
}

/// Serves `GET /metrics` (the Prometheus text format) on `listener` until `stop` fires; any
/// other path answers 404.
pub async fn serve_scrape(
    listener: TcpListener,
    metrics: Arc<ServiceMetrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use hyper::server::conn::http1;
    use hyper_util::rt::TokioIo;
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "metrics endpoint: accept failed");
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let metrics = metrics.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(request, &metrics).await) }
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "metrics endpoint: connection ended");
            }
        });
    }
}

async fn answer<B>(
    request: http::Request<B>,
    metrics: &ServiceMetrics,
) -> http::Response<http_body_util::Full<bytes::Bytes>> {
    let response = http::Response::builder();
    if request.method() != http::Method::GET || request.uri().path() != "/metrics" {
        return response
            .status(http::StatusCode::NOT_FOUND)
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                b"only GET /metrics is served here\n",
            )))
            .expect("a static response");
    }
    let text = metrics.render().await;
    response
        .header(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )
        .body(http_body_util::Full::new(bytes::Bytes::from(text)))
        .expect("a text response")
}

/// The layer that wraps the gRPC router: metrics of every call, and its status on its span.
#[derive(Clone, Debug)]
pub struct RpcMetricsLayer {
    duration_ms: Histogram<f64>,
    service: &'static str,
}

impl RpcMetricsLayer {
    /// A layer for `service` (its short name), recording with `meter`.
    pub fn new(meter: &Meter, service: &'static str) -> Self {
        let duration_ms = meter
            .f64_histogram("rpc.server.duration")
            .with_unit("ms")
            .with_description("Duration of gRPC calls handled, by method")
            .build();
        Self {
            duration_ms,
            service,
        }
    }
}

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service produced by [`RpcMetricsLayer`].
#[derive(Clone, Debug)]
pub struct RpcMetrics<S> {
    inner: S,
    layer: RpcMetricsLayer,
}

impl<S, B, R> tower::Service<http::Request<B>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<crate::telemetry::call_end::StatusBody<R>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().to_owned();
        let start = Instant::now();
        let layer = self.layer.clone();
        let future = self.inner.call(request);
        Box::pin(async move {
            // Polled inside the call's server span (`telemetry::server_span`), which the
            // watcher holds until the call has ended: a stream's span and duration cover the
            // whole stream, and its status is the one its trailers bring.
            let span = tracing::Span::current();
            let on_end = move |code: Option<tonic::Code>| {
                crate::telemetry::record_server_status(&span, code);
                let status = code.map_or_else(
                    || "transport_error".to_owned(),
                    |code| (code as i32).to_string(),
                );
                layer.duration_ms.record(
                    start.elapsed().as_secs_f64() * 1000.0,
                    &[
                        KeyValue::new("rpc.system", "grpc"),
                        KeyValue::new("rpc.service", layer.service),
                        KeyValue::new("rpc.method", method),
                        KeyValue::new("rpc.grpc.status_code", status),
                    ],
                );
            };
            crate::telemetry::call_end::watch(future.await, Box::new(on_end))
        })
    }
}
