//! The notification service: tells applicants and agency systems about every state change, at
//! least once, in order, even when a receiver or the mail relay is down for hours.
//!
//! `domain` holds the validated events and subscriptions, the Standard Webhooks signature, the
//! retry decision and the email templates; `storage` the feed, the subscriptions and the
//! durable delivery queue; `worker` the loop that makes attempts through `webhook` (HTTP) and
//! `email` (SMTP); `grpc` the wire conversion and the event stream. [`run`] serves it all.
#![forbid(unsafe_code)]

pub mod domain;
pub mod email;
pub mod error;
pub mod grpc;
pub mod settings;
pub mod storage;
pub mod webhook;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use subsidy_common::BoxError;
use subsidy_common::config::{Config, ServiceKind};
use subsidy_common::db::Db;
use subsidy_proto::notification::notification_service_server::NotificationServiceServer;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::domain::delivery::RetryPolicy;
pub use crate::settings::Settings;
pub use grpc::NotificationGrpc;
pub use storage::Store;
pub use worker::Worker;

/// What the RPCs and the worker share: the store, the settings, and the signals that a new
/// event was stored (for streams) or that deliveries may be due (for the worker).
#[derive(Clone, Debug)]
pub struct Hub {
    /// The database.
    pub store: Store,
    /// The settings.
    pub config: Arc<Settings>,
    /// The retry schedule.
    pub policy: RetryPolicy,
    /// The last feed position stored by this process; streams wait on it.
    pub feed: watch::Sender<i64>,
    /// Wakes the worker.
    pub wake: Arc<Notify>,
}

impl Hub {
    /// A hub over `store` with `config`.
    pub fn new(store: Store, config: &Settings) -> Self {
        Hub {
            store,
            config: Arc::new(config.clone()),
            policy: RetryPolicy::new(
                config.retry_schedule_ms.clone(),
                config.retry_jitter_percent,
            ),
            feed: watch::channel(0).0,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Tells streams and the worker that the event at `seq` was stored.
    pub fn published(&self, seq: i64) {
        self.feed.send_modify(|head| *head = (*head).max(seq));
        self.wake.notify_one();
    }
}

/// Connects to the configured database and applies the migrations.
pub async fn open_store(config: &Config) -> Result<Store, BoxError> {
    let db = Db::connect(
        &config.database.url,
        config.database.max_connections,
        Duration::from_millis(config.database.acquire_timeout_ms),
    )
    .await?;
    let store = Store::new(db);
    store.migrate().await?;
    Ok(store)
}

/// Applies the notification service's migrations (`subsidy migrate notification`).
pub async fn migrate(config: &Config) -> Result<(), BoxError> {
    let db = Db::connect(
        &config.database.url,
        1,
        Duration::from_millis(config.database.acquire_timeout_ms),
    )
    .await?;
    Store::new(db).migrate().await?;
    Ok(())
}

/// The service's gRPC routes with the configured message-size limits; open streams end when
/// `stop` turns true.
pub fn routes(hub: Hub, stop: watch::Receiver<bool>, config: &Config) -> tonic::service::Routes {
    let service = NotificationServiceServer::new(NotificationGrpc::new(hub, stop))
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
    let store = open_store(&config).await?;
    let hub = Hub::new(store.clone(), &settings);
    let worker = Worker::new(store, &settings, hub.wake.clone())?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut worker_task = AbortOnDrop(tokio::spawn(
        worker.run(stop_rx.clone(), config.shutdown_grace()),
    ));
    let stopper = stop_tx.clone();
    let result = subsidy_common::server::serve(
        ServiceKind::Notification,
        &config,
        routes(hub, stop_rx, &config),
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
