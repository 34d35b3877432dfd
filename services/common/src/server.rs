//! The gRPC server every service runs: health (`grpc.health.v1`: the service's own name is
//! readiness, SERVING while its database answers and until shutdown begins; the empty name is
//! liveness, SERVING until shutdown), reflection (v1 and v1alpha), a span per call
//! with W3C trace context from the caller, the server's limits (`limits`: deadlines, message
//! size, calls per connection) answered with an `ErrorInfo`, and graceful
//! shutdown that stops accepting calls on SIGTERM/SIGINT and drains in-flight ones within a
//! deadline.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::audit::grpc::AuditGrpc;
use crate::config::{Config, METRICS_OFF, ServiceKind};
use crate::db::Db;
use crate::limits::{DeadlineLayer, LimitsLayer};
use crate::metrics::{Gauges, ServiceMetrics};
use crate::security::Security;
use crate::{telemetry, tls};

/// The audit listing every service process serves.
pub const AUDIT_SERVICE_NAME: &str = "subsidy.audit.v1.AuditService";

/// Interval of HTTP/2 keep-alive pings to a connected client, in seconds.
pub const HTTP2_KEEPALIVE_INTERVAL_SECONDS: u64 = 30;

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The transport failed.
    #[error("gRPC transport failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The reflection service could not be built.
    #[error("reflection setup failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The metrics could not be set up.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// The metrics port could not be bound.
    #[error("cannot serve metrics on {addr}: {source}")]
    MetricsListen {
        /// The configured address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Binds a listener; `addr` may use port 0.
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Waits for SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("install the SIGTERM handler");
        tokio::select! {
            _ = interrupt => {},
            _ = terminate.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

/// Serves `routes` (the service's own gRPC services) plus health, reflection and the audit
/// listing on `listener`, and its metrics (the RPCs, the database pool and `upkeep`'s gauges)
/// at `GET /metrics` on `telemetry.metrics_listen`, and prunes `db` (its idempotency records
/// and `upkeep`'s rules), until `shutdown` completes; then reports NOT_SERVING, lets in-flight
/// calls finish for at most the configured grace period, and returns. Every call passes the
/// access layer of `security`; refused changes are recorded in the audit trail of `db` (every
/// real service has one; a test's fake peer may have none, and then serves no audit listing).
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    kind: ServiceKind,
    config: &Config,
    security: &Security,
    db: Option<&Db>,
    upkeep: Upkeep,
    routes: Routes,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let metrics = Arc::new(ServiceMetrics::new(
        kind.name(),
        config.telemetry.otlp_endpoint.as_deref(),
        db.cloned(),
        upkeep.gauges,
    )?);
    let (metrics_stop, metrics_stopped) = tokio::sync::watch::channel(false);
    if let Some(db) = db {
        start_pruning(config, db, upkeep.pruning, metrics_stopped.clone());
    }
    start_metrics(kind, config, &metrics, metrics_stopped).await?;
    let (reporter, health_service) = start_health(kind).await;
    // Held while readiness changes, and true once shutdown has begun: the database watcher
    // never turns a draining service back to SERVING.
    let stopping = Arc::new(tokio::sync::Mutex::new(false));
    let watcher = db.map(|db| {
        tokio::spawn(watch_database(
            reporter.clone(),
            kind,
            db.clone(),
            Readiness::of(config),
            stopping.clone(),
        ))
    });
    let routes = with_platform_routes(kind, db, routes, health_service)?;
    let grace = config.shutdown_grace();
    let drained = start_draining(kind, grace, reporter, stopping, shutdown);
    let service = Service {
        kind,
        config,
        security,
        db,
    };
    run_server(&service, &metrics, routes, listener, drained).await?;
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    let _ = metrics_stop.send(true);
    // The last OTLP export waits for the runtime's I/O: blocking a worker on it would stall it
    // (for the exporter's timeout, 5 s) when every worker is doing so, as in `subsidy dev`, whose
    // four services stop at once.
    let _ = tokio::task::spawn_blocking(move || metrics.shutdown()).await;
    Ok(())
}

/// What the gRPC server of one service is built from.
struct Service<'a> {
    kind: ServiceKind,
    config: &'a Config,
    security: &'a Security,
    db: Option<&'a Db>,
}

/// Prunes `db` in the background until `stopped`: the service's own `rules`, then its
/// idempotency records.
fn start_pruning(
    config: &Config,
    db: &Db,
    mut rules: Vec<crate::retention::Rule>,
    stopped: tokio::sync::watch::Receiver<bool>,
) {
    // The service's own rules first: they may look at the idempotency records.
    rules.push(crate::retention::Rule::idempotency_keys(
        Duration::from_millis(config.database.request_retention_ms),
    ));
    tokio::spawn(crate::retention::run(
        db.clone(),
        rules,
        Duration::from_millis(config.database.prune_interval_ms),
        config.database.prune_batch,
        stopped,
    ));
}

/// Serves `metrics` at `GET /metrics` on `telemetry.metrics_listen` (unless off) and, with an
/// OTLP endpoint, refreshes its gauges for the export, until `stopped`.
async fn start_metrics(
    kind: ServiceKind,
    config: &Config,
    metrics: &Arc<ServiceMetrics>,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let metrics_listen = &config.telemetry.metrics_listen;
    if metrics_listen != METRICS_OFF {
        let listener = TcpListener::bind(metrics_listen).await.map_err(|source| {
            ServeError::MetricsListen {
                addr: metrics_listen.clone(),
                source,
            }
        })?;
        tracing::info!(service = kind.name(), addr = ?listener.local_addr().ok(), "serving metrics at /metrics");
        tokio::spawn(crate::metrics::serve_scrape(
            listener,
            metrics.clone(),
            stopped.clone(),
        ));
    }
    if config.telemetry.otlp_endpoint.is_some() {
        tokio::spawn(crate::metrics::refresh_periodically(
            metrics.clone(),
            stopped,
        ));
    }
    Ok(())
}

/// The health service, with readiness (the service's own name) and liveness (the empty name)
/// both SERVING, and the reporter that changes them.
async fn start_health(
    kind: ServiceKind,
) -> (
    HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(kind.grpc_name(), ServingStatus::Serving)
        .await;
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    (reporter, health_service)
}

/// `routes` with what every service serves beside its own: health, reflection, and the audit
/// listing when there is a database.
fn with_platform_routes(
    kind: ServiceKind,
    db: Option<&Db>,
    routes: Routes,
    health_service: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
) -> Result<Routes, ServeError> {
    let mut routes = routes
        .add_service(health_service)
        .add_service(reflection(kind).build_v1()?)
        .add_service(reflection(kind).build_v1alpha()?);
    if let Some(db) = db {
        routes = routes.add_service(AuditGrpc::new(db.clone(), kind.name()).into_server());
    }
    Ok(routes)
}

/// Both reflection versions, so that tools still asking `v1alpha` (grpcurl before 1.9, many IDE
/// plugins) work too.
const REFLECTION_SERVICE_NAMES: [&str; 2] = [
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// The reflection of `kind`'s server, either version: the subsidy files (with the `google.rpc`
/// error details) and health, listing the service, the audit listing, health and both
/// reflection versions.
fn reflection(kind: ServiceKind) -> tonic_reflection::server::Builder<'static> {
    let builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(subsidy_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        // Each version's builder adds only its own file: both are there so that either
        // version describes every service it lists.
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .with_service_name(kind.grpc_name())
        .with_service_name(AUDIT_SERVICE_NAME)
        .with_service_name("grpc.health.v1.Health");
    REFLECTION_SERVICE_NAMES
        .into_iter()
        .fold(builder, |builder, name| builder.with_service_name(name))
}

/// Waits in the background for `shutdown`; then reports NOT_SERVING (after which the readiness
/// watcher changes nothing) and fires the returned receiver, which starts the drain of at most
/// `grace`.
fn start_draining(
    kind: ServiceKind,
    grace: Duration,
    reporter: HealthReporter,
    stopping: Arc<tokio::sync::Mutex<bool>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> tokio::sync::oneshot::Receiver<()> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        shutdown.await;
        let mut stopping = stopping.lock().await;
        *stopping = true;
        mark_not_serving(&reporter, kind).await;
        drop(stopping);
        tracing::info!(
            service = kind.name(),
            grace_ms = grace.as_millis() as u64,
            "shutting down"
        );
        let _ = stop_tx.send(());
    });
    stop_rx
}

/// Builds the gRPC server of `service` over `routes` (metrics, deadlines, access, limits) and
/// serves on `listener` until `drained` fires and in-flight calls finish, or the grace period
/// after it ends.
async fn run_server(
    service: &Service<'_>,
    metrics: &ServiceMetrics,
    routes: Routes,
    listener: TcpListener,
    drained: tokio::sync::oneshot::Receiver<()>,
) -> Result<(), ServeError> {
    let Service {
        kind,
        config,
        security,
        db,
    } = *service;
    let grace = config.shutdown_grace();
    let mut builder = Server::builder();
    if config.server.max_connection_age_ms > 0 {
        builder = builder
            .max_connection_age(Duration::from_millis(config.server.max_connection_age_ms))
            .max_connection_age_grace(grace);
    }
    let server = builder
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(HTTP2_KEEPALIVE_INTERVAL_SECONDS)))
        .trace_fn(move |request| telemetry::server_span(kind, request))
        .layer(crate::metrics::RpcMetricsLayer::new(
            &metrics.meter(),
            kind.name(),
        ))
        .layer(DeadlineLayer::new(config.request_timeout()))
        .layer(security.layer(db))
        .layer(LimitsLayer::new(
            config.server.concurrency_per_connection_max,
        ))
        .add_routes(routes);

    let local = listener.local_addr().ok();
    tracing::info!(service = kind.name(), addr = ?local, tls = security.tls().is_some(), "serving");
    let (deadline_tx, deadline_rx) = tokio::sync::oneshot::channel::<()>();
    let stopped = async move {
        let _ = drained.await;
        let _ = deadline_tx.send(());
    };
    let serve: std::pin::Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> =
        match security.tls() {
            Some(state) => Box::pin(
                server
                    .serve_with_incoming_shutdown(tls::incoming(listener, state.clone()), stopped),
            ),
            // `Server::tcp_nodelay` is ignored for a caller-supplied incoming stream, so the
            // accepted sockets get TCP_NODELAY here: without it a response's frames meet
            // Nagle's algorithm and the client's delayed ACK, and every call takes 40 ms longer.
            None => Box::pin(server.serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                stopped,
            )),
        };
    tokio::pin!(serve);
    tokio::select! {
        result = &mut serve => result?,
        _ = async { let _ = deadline_rx.await; tokio::time::sleep(grace).await; } => {
            // Still running after the grace period: in-flight calls are abandoned.
            tracing::warn!(service = kind.name(), "shutdown grace period over; dropping remaining calls");
        }
    }
    Ok(())
}

/// What a service's process does beside serving calls: its own gauges, and its own rows to
/// prune beyond its idempotency records (which every service with a database prunes).
#[derive(Debug, Default)]
pub struct Upkeep {
    /// The service's gauges.
    pub gauges: Gauges,
    /// The service's pruning rules.
    pub pruning: Vec<crate::retention::Rule>,
}

/// How the database behind readiness is checked.
#[derive(Clone, Copy, Debug)]
struct Readiness {
    /// Between two checks.
    interval: Duration,
    /// For one check to answer.
    timeout: Duration,
}

impl Readiness {
    /// The checks `config` asks for (`server.readiness_interval_ms`, `_timeout_ms`).
    fn of(config: &Config) -> Readiness {
        Readiness {
            interval: Duration::from_millis(config.server.readiness_interval_ms),
            timeout: Duration::from_millis(config.server.readiness_timeout_ms),
        }
    }
}

/// Checks the database every `readiness.interval`: readiness (the service's own name) is
/// NOT_SERVING from the first check that fails or does not answer within `readiness.timeout`,
/// and SERVING again from the first that succeeds. Liveness (the empty name) is left alone: a
/// restart does not bring a database back. Stops changing anything once `stopping` is true.
async fn watch_database(
    reporter: HealthReporter,
    kind: ServiceKind,
    db: Db,
    readiness: Readiness,
    stopping: Arc<tokio::sync::Mutex<bool>>,
) {
    let mut ready = true;
    loop {
        tokio::time::sleep(readiness.interval).await;
        let answers = tokio::time::timeout(readiness.timeout, db.ping())
            .await
            .unwrap_or(false);
        if answers == ready {
            continue;
        }
        let stopping = stopping.lock().await;
        if *stopping {
            return;
        }
        ready = answers;
        if ready {
            tracing::info!(service = kind.name(), "database answers again: ready");
            reporter
                .set_service_status(kind.grpc_name(), ServingStatus::Serving)
                .await;
        } else {
            tracing::warn!(
                service = kind.name(),
                timeout_ms = readiness.timeout.as_millis() as u64,
                "database does not answer: not ready"
            );
            reporter
                .set_service_status(kind.grpc_name(), ServingStatus::NotServing)
                .await;
        }
    }
}

async fn mark_not_serving(reporter: &HealthReporter, kind: ServiceKind) {
    reporter
        .set_service_status(kind.grpc_name(), ServingStatus::NotServing)
        .await;
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
}
