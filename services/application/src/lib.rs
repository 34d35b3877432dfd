//! The application service: the front door that carries compute-voucher claims and
//! data-infrastructure proposals through their life cycles, asking the rules service for
//! decisions and the budget service for money, and telling the notification service about
//! every change through an outbox.
//!
//! The rooms: `grpc` is the edge (validate, call one use case, render through `wire`);
//! `workflow` holds the use cases and the orchestration across services (with the reconciler
//! and the outbox relay); `domain` the pure state machines and decisions; `storage` the queries
//! over a transaction handed in; `upstream` the peer clients; `error` the service's error and
//! its one mapping to a status; `settings` the `[application]` section. [`run`] serves it.
#![forbid(unsafe_code)]

pub mod documents;
pub mod domain;
pub mod error;
#[cfg(feature = "test-faults")]
pub mod faults;
pub mod gauges;
pub mod grpc;
pub mod retention;
pub mod settings;
pub mod storage;
pub mod upstream;
pub mod wire;
pub mod workflow;

use std::time::Duration;

use subsidy_common::BoxError;
use subsidy_common::config::{Config, ServiceKind};
use subsidy_common::db::Db;
use subsidy_common::security::Security;
use subsidy_proto::application::application_service_server::ApplicationServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use error::ApplicationError;
pub use grpc::ApplicationGrpc;
pub use storage::Store;
pub use workflow::Workflow;

/// Applies migrations (unless a job does: `database.migrate_on_start`), connects to the
/// configured database, and to the peers with `security` (mutual TLS as this service).
pub async fn open(config: &Config, security: &Security) -> Result<Workflow, BoxError> {
    let section: settings::Settings = config.section()?;
    if config.database.migrate_on_start {
        migrate(config).await?;
    }
    let store = Store::new(Db::open(&config.database).await?);
    let peers = upstream::Peers::connect(config, &section, security)?;
    let documents = workflow::Documents {
        store: documents::DocumentStore::open(&section)?,
        size_bytes_max: section.document_size_bytes_max,
        application_bytes_max: section.application_documents_bytes_max,
    };
    Ok(
        Workflow::new(store, peers, workflow::WorkflowSettings::from(&section))
            .with_documents(documents),
    )
}

/// Applies the application service's migrations to the configured database
/// (`subsidy migrate application`).
pub async fn migrate(config: &Config) -> Result<(), BoxError> {
    Store::new(Db::open_for_migrations(&config.database).await?)
        .migrate()
        .await?;
    Ok(())
}

/// The service's gRPC routes with the configured message-size limits.
pub fn routes(workflow: Workflow, config: &Config) -> tonic::service::Routes {
    let service = ApplicationServiceServer::new(ApplicationGrpc::new(workflow))
        .max_decoding_message_size(config.server.message_size_max_bytes)
        .max_encoding_message_size(config.server.message_size_max_bytes);
    tonic::service::Routes::new(service)
}

/// Finishes half-done steps every `interval` until `stop` fires.
pub async fn reconcile(workflow: Workflow, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        if let Err(error) = workflow.reconcile_once().await {
            tracing::warn!(%error, "reconciler pass failed");
        }
    }
}

/// Delivers outbox events to the notification service until `stop` fires: at once when woken
/// by a commit, every `interval` otherwise, backing off while deliveries fail.
pub async fn relay(workflow: Workflow, interval: Duration, mut stop: watch::Receiver<bool>) {
    let wake = workflow.relay_wake();
    let mut backoff = interval;
    loop {
        let pause = match workflow.relay_once().await {
            Ok((delivered, false)) => {
                backoff = interval;
                if delivered as i64 == workflow::RELAY_BATCH_MAX {
                    // A full batch: more may be waiting.
                    Duration::ZERO
                } else {
                    interval
                }
            }
            Ok((_, true)) => {
                backoff = (backoff * 2).min(Duration::from_millis(workflow::RELAY_BACKOFF_MS_MAX));
                backoff
            }
            Err(error) => {
                tracing::warn!(%error, "outbox relay pass failed");
                backoff = (backoff * 2).min(Duration::from_millis(workflow::RELAY_BACKOFF_MS_MAX));
                backoff
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = wake.notified(), if backoff == interval => {}
            _ = stop.changed() => return,
        }
    }
}

/// Runs the service on `listener` until `shutdown` completes. The reconciler and the relay run
/// in the same task as the server, so that aborting the task stops all of them at once (as a
/// crash would).
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), BoxError> {
    let section: settings::Settings = config.section()?;
    let security = Security::load(ServiceKind::Application, &config)?;
    let workflow = open(&config, &security).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let background = async {
        tokio::join!(
            reconcile(
                workflow.clone(),
                Duration::from_millis(section.reconcile_interval_ms),
                stop_rx.clone(),
            ),
            relay(
                workflow.clone(),
                Duration::from_millis(section.relay_interval_ms),
                stop_rx.clone(),
            ),
        );
    };
    let server = async {
        let result = subsidy_common::server::serve(
            ServiceKind::Application,
            &config,
            &security,
            Some(workflow.store().db()),
            subsidy_common::server::Upkeep {
                gauges: gauges::gauges(workflow.store().db().clone()),
                pruning: vec![retention::request_progress(Duration::from_millis(
                    config.database.request_retention_ms,
                ))],
            },
            routes(workflow.clone(), &config),
            listener,
            shutdown,
        )
        .await;
        let _ = stop_tx.send(true);
        result
    };
    let (result, ()) = tokio::join!(server, background);
    result?;
    Ok(())
}
