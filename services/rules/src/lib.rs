//! The rules service: versioned policies as data, explainable and deterministic decisions.
//!
//! The rooms, from the wire inwards:
//! - `grpc`: the edge; parses and validates each request with the shared kit, calls one use
//!   case, renders the answer through `wire`; `error` turns every refusal into a status.
//! - `wire`: conversions between `subsidy.rules.v1` messages and the domain.
//! - `ops`: the use cases: evaluations, ranking and simulation over the catalog, and the two
//!   writes (publication, denylist replacement), each one transaction with its idempotency key.
//! - `compiler`: from a policy draft (or a stored version) to a policy ready to evaluate: field
//!   parsing, the engine's validation of the graph, and the probes with sample claims.
//! - `catalog`: the compiled policies and the denylist in memory, refreshed when the database's
//!   generation counters move.
//! - `domain`: pure: policy versions, the ZEN decision graphs with the typed checks and money
//!   invariants applied after them, the ranking, the simulation, the denylist.
//! - `storage`: queries over a pool or a transaction handed in; `settings`: the `[rules]`
//!   section; `policy_file`: policy files and the shipped 2025 policies.
//!
//! [`run`] serves it; on start it publishes the shipped 2025 policies of both programs when they
//! are not published yet.
#![forbid(unsafe_code)]

pub mod catalog;
pub mod compiler;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod ops;
pub mod policy_file;
pub mod settings;
pub mod storage;
pub mod wire;

use std::sync::Arc;

use subsidy_common::BoxError;
use subsidy_common::config::{Config, ServiceKind};
use subsidy_common::db::Db;
use subsidy_common::security::Security;
use subsidy_proto::rules::rules_service_server::RulesServiceServer;
use tokio::net::TcpListener;

pub use catalog::Catalog;
pub use compiler::validate_draft;
pub use grpc::RulesGrpc;
pub use ops::policies::SEED_PUBLISHER;
pub use storage::Store;

/// Applies the migrations (unless a job does: `database.migrate_on_start`) and connects to
/// the configured database.
pub async fn open_store(config: &Config) -> Result<Store, BoxError> {
    if config.database.migrate_on_start {
        migrate(config).await?;
    }
    let db = Db::open(&config.database).await?;
    Ok(Store::new(db))
}

/// Publishes each shipped policy version that is not published yet (see
/// [`ops::policies::seed_shipped`]).
pub async fn seed_shipped_policies(store: &Store) -> Result<(), BoxError> {
    ops::policies::seed_shipped(store).await
}

/// Applies the rules migrations to the configured database (`subsidy migrate rules`).
pub async fn migrate(config: &Config) -> Result<(), BoxError> {
    let db = Db::open_for_migrations(&config.database).await?;
    Store::new(db).migrate().await?;
    Ok(())
}

/// How the configuration says publicity periods are counted (its calendar file and override).
pub fn publicity(config: &Config) -> Result<ops::policies::Publicity, BoxError> {
    let settings: settings::Settings = config.section()?;
    Ok(ops::policies::Publicity {
        calendar: settings.calendar()?,
        working_days_override: settings.publicity_override()?,
    })
}

/// The rules service's gRPC routes over `catalog` with the configured message-size limits.
/// `run` checks the publicity settings first; a caller that did not gets the shipped calendar
/// when they are invalid.
pub fn routes(catalog: Arc<Catalog>, config: &Config) -> tonic::service::Routes {
    let publicity = publicity(config).unwrap_or_else(|_| ops::policies::Publicity {
        calendar: domain::calendar::Calendar::shipped(),
        working_days_override: None,
    });
    let service = RulesServiceServer::new(RulesGrpc::new(catalog, publicity))
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
    let publicity = publicity(&config)?;
    if let Some(days) = publicity.working_days_override {
        tracing::warn!(
            working_days = days,
            "every policy's publicity period is overridden ({}); development only",
            settings::PUBLICITY_OVERRIDE_KEY
        );
    }
    let security = Security::load(ServiceKind::Rules, &config)?;
    let store = open_store(&config).await?;
    if settings.seed_shipped_policies {
        seed_shipped_policies(&store).await?;
    }
    let db = store.db().clone();
    let catalog = Arc::new(Catalog::open(store).await?);
    subsidy_common::server::serve(
        ServiceKind::Rules,
        &config,
        &security,
        Some(&db),
        subsidy_common::server::Upkeep::default(),
        routes(catalog, &config),
        listener,
        shutdown,
    )
    .await?;
    Ok(())
}
