//! Shared platform of the subsidy services: domain newtypes every service uses (`Money`,
//! `Uscc`, `RequestId`), configuration, telemetry, the gRPC server builder, database access on
//! PostgreSQL or SQLite, request idempotency and the test harness.
#![forbid(unsafe_code)]

pub mod admission;
pub mod audit;
pub mod auth;
pub mod balance;
pub mod config;
pub mod crash;
pub mod db;
pub mod edge;
pub mod group_commit;
pub mod idempotency;
pub mod limits;
pub mod metrics;
pub mod money;
pub mod request_id;
pub mod retention;
pub mod security;
pub mod server;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod uscc;

/// The error of start-up and wiring paths, where a message is all an operator needs.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub use money::Money;
pub use request_id::RequestId;
pub use uscc::Uscc;
