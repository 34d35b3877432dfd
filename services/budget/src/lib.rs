//! The budget service: the authoritative, race-free, idempotent holder of the subsidy pools.
//!
//! The rooms: `grpc` (the edge: validation, one use case per call), `wire` (values on the
//! wire), `ops` (the use cases: each pool's writer batches its money movements into one
//! transaction), `domain` (pure: pools, reservations, the ledger's chain, the decisions of a
//! batch), `storage` (queries per table over a transaction handed in), `error` (the errors and
//! their one mapping to statuses), `settings` (the `[budget]` section), `checkpoint_key` (the
//! checkpoint signing key on disk) and `publish` (checkpoints as events to the notification
//! service). [`run`] serves it.
#![forbid(unsafe_code)]

pub mod checkpoint_key;
pub mod domain;
pub mod error;
pub mod gauges;
pub mod grpc;
pub mod ops;
pub mod publish;
pub mod settings;
pub mod storage;
pub mod wire;

use std::time::Duration;

use subsidy_common::BoxError;
use subsidy_common::config::{Config, ServiceKind};
use subsidy_common::db::Db;
use subsidy_common::security::Security;
use subsidy_proto::budget::budget_service_server::BudgetServiceServer;
use tokio::net::TcpListener;

pub use error::BudgetError;
pub use grpc::BudgetGrpc;
pub use ops::Budget;
pub use storage::Store;

/// Holds expired per sweep of the background expiry.
pub const EXPIRY_BATCH: i64 = 1000;

/// Connects to the configured database, applies migrations and, if configured, seeds the
/// 2025 pools.
pub async fn open(config: &Config) -> Result<Budget, BoxError> {
    let settings: settings::Settings = config.section()?;
    if config.database.migrate_on_start {
        migrate(config).await?;
    }
    let db = Db::open(&config.database).await?;
    let store = Store::new(db);
    let mut budget = Budget::new(store);
    if let Some(signer) = checkpoint_key::load(&settings)? {
        tracing::info!(
            algorithm = signer.public_key().algorithm().as_str(),
            key_id = signer.public_key().key_id(),
            "ledger checkpoints are signed"
        );
        budget = budget.with_checkpoint_signer(signer);
    } else {
        tracing::warn!(
            "ledger checkpoints are disabled: budget.checkpoint_key_file (SUBSIDY_BUDGET_CHECKPOINT_KEY_FILE) is not set"
        );
    }
    if settings.seed_2025_pools {
        for pool in domain::seeded_pools_2025() {
            budget.ensure_pool(&pool).await?;
        }
    }
    Ok(budget)
}

/// Applies the budget's migrations to the configured database (`subsidy migrate budget`).
pub async fn migrate(config: &Config) -> Result<(), BoxError> {
    let db = Db::open_for_migrations(&config.database).await?;
    Store::new(db).migrate().await?;
    Ok(())
}

/// The budget's gRPC routes with the configured message-size limits.
pub fn routes(budget: Budget, config: &Config) -> tonic::service::Routes {
    let service = BudgetServiceServer::new(BudgetGrpc::new(budget))
        .max_decoding_message_size(config.server.message_size_max_bytes)
        .max_encoding_message_size(config.server.message_size_max_bytes);
    tonic::service::Routes::new(service)
}

/// Expires due holds every `interval` until `stop` fires. Errors are logged and the sweep goes
/// on; the database clock decides what is due.
pub fn spawn_expiry(
    budget: Budget,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.changed() => return,
            }
            match budget.expire_due(EXPIRY_BATCH).await {
                Ok(0) => {}
                Ok(count) => tracing::info!(expired = count, "expired holds"),
                Err(error) => tracing::warn!(%error, "expiry sweep failed"),
            }
        }
    })
}

/// Every `interval` (first after one interval) signs the head of each pool that moved, and
/// publishes checkpoints not yet published after each checkpoint made and every
/// [`ops::checkpoint::PUBLISH_RETRY_MS`], until `stop` fires. Errors are logged and the work
/// goes on; nothing here holds up a money movement.
pub fn spawn_checkpoints(
    budget: Budget,
    interval: Duration,
    publisher: Option<std::sync::Arc<dyn ops::checkpoint::Publisher>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let made = budget.checkpoint_made();
        let mut schedule =
            tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        schedule.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut retry =
            tokio::time::interval(Duration::from_millis(ops::checkpoint::PUBLISH_RETRY_MS));
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = schedule.tick() => match budget.checkpoint_moved_pools().await {
                    Ok(0) => {}
                    Ok(count) => tracing::info!(checkpoints = count, "signed ledger checkpoints"),
                    Err(error) => tracing::warn!(%error, "scheduled checkpoint failed"),
                },
                _ = retry.tick() => {}
                _ = made.notified() => {}
                _ = stop.changed() => return,
            }
            if let Some(publisher) = &publisher
                && let Err(error) = budget.publish_checkpoints(publisher.as_ref()).await
            {
                tracing::warn!(%error, "publishing checkpoints failed");
            }
        }
    })
}

/// Runs the budget service on `listener` until `shutdown` completes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), BoxError> {
    let settings: settings::Settings = config.section()?;
    let security = Security::load(ServiceKind::Budget, &config)?;
    let budget = open(&config).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let expiry = spawn_expiry(
        budget.clone(),
        Duration::from_millis(settings.expiry_interval_ms),
        stop_rx.clone(),
    );
    let publisher: std::sync::Arc<dyn ops::checkpoint::Publisher> =
        std::sync::Arc::new(publish::NotificationPublisher::connect(&config, &security)?);
    let checkpoints = spawn_checkpoints(
        budget.clone(),
        Duration::from_millis(settings.checkpoint_interval_ms),
        Some(publisher),
        stop_rx,
    );
    let result = subsidy_common::server::serve(
        ServiceKind::Budget,
        &config,
        &security,
        Some(&budget.db().clone()),
        subsidy_common::server::Upkeep {
            gauges: gauges::gauges(budget.db().clone()),
            pruning: Vec::new(),
        },
        routes(budget, &config),
        listener,
        shutdown,
    )
    .await;
    let _ = stop_tx.send(true);
    let _ = expiry.await;
    let _ = checkpoints.await;
    result?;
    Ok(())
}
