//! The rules service: versioned policies as data, explainable and deterministic decisions.
//!
//! `domain` holds the policy versions, the ZEN decision graphs and the typed checks and money
//! invariants applied after them, the ranking and the simulation; `storage` the immutable policy
//! rows, the denylist and the idempotency keys; `catalog` the compiled policies and denylist in
//! memory, refreshed when the database's generation counters move; `grpc` the wire conversion.
//! [`run`] serves it; on start it publishes the shipped 2025 policies of both programs when they
//! are not published yet.
#![forbid(unsafe_code)]

pub mod catalog;
pub mod compiler;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod policy_file;
pub mod settings;
pub mod storage;

use std::sync::Arc;
use std::time::Duration;

use subsidy_common::BoxError;
use subsidy_common::config::{Config, ServiceKind};
use subsidy_common::db::Db;
use subsidy_proto::rules::rules_service_server::RulesServiceServer;
use tokio::net::TcpListener;

pub use catalog::Catalog;
pub use grpc::RulesGrpc;
pub use storage::Store;

/// Who the seeded policies are published by.
pub const SEED_PUBLISHER: &str = "system:seed";

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

/// Publishes each shipped policy version that is not published yet. A published version is
/// never changed: when a shipped file differs from the published version of the same number,
/// the published one stays in force and a warning says so.
pub async fn seed_shipped_policies(store: &Store) -> Result<(), BoxError> {
    for draft in policy_file::shipped() {
        let compiled = grpc::validate_draft("policy", &draft)
            .map_err(|e| format!("shipped policy {} is invalid: {e:?}", draft.version))?;
        let spec = &compiled.record.spec;
        let name = format!("{}@{}", spec.program(), spec.version);
        let published = store
            .publish(
                spec,
                SEED_PUBLISHER,
                storage::Idempotent::Unkeyed,
                |record| grpc::policy_to_proto(record, false),
            )
            .await;
        match published {
            Ok(_) => tracing::info!(policy = %name, "published a shipped policy"),
            Err(error::RulesError::PolicyVersionExists { .. }) => {
                let stored = store
                    .content_sha256_of(spec.program().policy_id(), &spec.version.to_string())
                    .await?;
                if stored.as_deref() != Some(compiled.record.content_sha256.as_str()) {
                    tracing::warn!(
                        policy = %name,
                        "the shipped policy differs from the published version of the same number; the published one stays in force"
                    );
                }
            }
            Err(other) => return Err(format!("seeding {name}: {other}").into()),
        }
    }
    Ok(())
}

/// Applies the rules migrations to the configured database (`subsidy migrate rules`).
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

/// The rules service's gRPC routes over `catalog` with the configured message-size limits.
pub fn routes(catalog: Arc<Catalog>, config: &Config) -> tonic::service::Routes {
    let service = RulesServiceServer::new(RulesGrpc::new(catalog))
        .max_decoding_message_size(config.server.message_size_max_bytes)
        .max_encoding_message_size(config.server.message_size_max_bytes);
    tonic::service::Routes::new(service)
}

/// Runs the rules service on `listener` until `shutdown` completes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), BoxError> {
    let settings: settings::Settings = config.section()?;
    let store = open_store(&config).await?;
    if settings.seed_shipped_policies {
        seed_shipped_policies(&store).await?;
    }
    let catalog = Arc::new(Catalog::open(store).await?);
    subsidy_common::server::serve(
        ServiceKind::Rules,
        &config,
        routes(catalog, &config),
        listener,
        shutdown,
    )
    .await?;
    Ok(())
}
