//! The notification service: tells applicants and agency systems about every state change, at
//! least once, in order, even when a receiver or the mail relay is down for hours.
//!
//! The rooms, the same in every service of the house:
//! - `grpc` — the edge: parses and validates each request with the shared kit, calls one use
//!   case, renders the answer through `wire`;
//! - `wire` — conversions between the domain (and stored rows) and the proto;
//! - `ops` — the use cases: transaction, idempotency key, domain decision, storage writes,
//!   stored response; also the worker's (claim, record, disable, repair);
//! - `domain` — pure: validated events and subscriptions, the Standard Webhooks signature, the
//!   fan-out, retry and disable decisions, the email templates;
//! - `storage` — queries over a transaction handed in: the feed, the subscriptions, the
//!   deliveries and the worker's queue;
//! - `stream` — the event stream: hub, cursor and follower;
//! - `error` — the service's error and its one mapping to gRPC statuses;
//! - `worker` — the loop that makes attempts through the transport adapters `webhook` (HTTP)
//!   and `email` (SMTP);
//! - `settings` — the `[notification]` configuration section.
//!
//! [`run`] serves it all.
#![forbid(unsafe_code)]

pub mod domain;
pub mod email;
pub mod error;
pub mod gauges;
pub mod grpc;
pub mod ops;
pub mod retention;
pub mod settings;
pub mod storage;
pub mod stream;
pub mod webhook;
pub mod wire;
pub mod worker;

use subsidy_common::BoxError;
use subsidy_common::config::{Config, ServiceKind};
use subsidy_common::db::Db;
use subsidy_common::security::Security;
use subsidy_proto::notification::notification_service_server::NotificationServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::domain::delivery::RetryPolicy;
use crate::ops::Ops;
pub use crate::settings::Settings;
use crate::stream::{Hub, Streams};
pub use grpc::NotificationGrpc;
pub use storage::Store;
pub use worker::Worker;

/// Applies the migrations (unless a job does: `database.migrate_on_start`), connects to the
/// configured database, loads the key of the signing secrets and the webhook allow-list, and
/// encrypts secrets stored in plaintext by an earlier version ([`Store::open`],
/// [`ops::secrets::seal_plaintext_secrets`]).
pub async fn open_store(config: &Config) -> Result<Store, BoxError> {
    if config.database.migrate_on_start {
        migrate(config).await?;
    }
    let db = Db::open(&config.database).await?;
    let store = Store::open(db, config)?;
    let sealed = ops::secrets::seal_plaintext_secrets(&store).await?;
    if sealed > 0 {
        tracing::info!(
            sealed,
            "encrypted the signing secrets of subscriptions stored in plaintext"
        );
    }
    Ok(store)
}

/// Applies the notification service's migrations (`subsidy migrate notification`).
pub async fn migrate(config: &Config) -> Result<(), BoxError> {
    let db = Db::open_for_migrations(&config.database).await?;
    Store::new(db).migrate().await?;
    Ok(())
}

/// The service's gRPC routes with the configured message-size limits.
pub fn routes(grpc: NotificationGrpc, config: &Config) -> tonic::service::Routes {
    let service = NotificationServiceServer::new(grpc)
        .max_decoding_message_size(config.server.message_size_max_bytes)
        .max_encoding_message_size(config.server.message_size_max_bytes);
    tonic::service::Routes::new(service)
}

/// Aborts a task when dropped, so that dropping [`run`]'s future (a crash, in tests) also
/// stops the worker and every attempt it started.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the service on `listener` until `shutdown` completes: the gRPC server and the
/// delivery worker. On shutdown, streams end, the worker stops claiming, and attempts under
/// way get the configured grace period to finish.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), BoxError> {
    let settings: Settings = config.section()?;
    let security = Security::load(ServiceKind::Notification, &config)?;
    let store = open_store(&config).await?;
    let db = store.db().clone();
    let hub = Hub::default();
    let policy = RetryPolicy::new(
        settings.retry_schedule_ms.clone(),
        settings.retry_jitter_percent,
    );
    let ops = Ops::new(store.clone(), hub.clone(), policy)
        .with_subscriptions_max(settings.subscriptions_max);
    let worker = Worker::new(ops.clone(), &settings)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let streams = Streams::new(store, hub, stop_rx.clone(), &settings);
    let grpc = NotificationGrpc::new(ops, streams, &settings);
    let mut worker_task = AbortOnDrop(tokio::spawn(
        worker.run(stop_rx.clone(), config.shutdown_grace()),
    ));
    let stopper = stop_tx.clone();
    let result = subsidy_common::server::serve(
        ServiceKind::Notification,
        &config,
        &security,
        Some(&db),
        subsidy_common::server::Upkeep {
            gauges: gauges::gauges(db.clone()),
            pruning: retention::rules(std::time::Duration::from_millis(
                settings.delivery_retention_ms,
            )),
        },
        routes(grpc, &config),
        listener,
        async move {
            shutdown.await;
            let _ = stopper.send(true);
        },
    )
    .await;
    let _ = stop_tx.send(true);
    let _ = (&mut worker_task.0).await;
    result?;
    Ok(())
}
