//! Shared platform of the subsidy services: domain newtypes every service uses (`Money`,
//! `Uscc`, `RequestId`), configuration, telemetry, the gRPC server builder, database access on
//! PostgreSQL or SQLite, request idempotency and the test harness.
#![forbid(unsafe_code)]

pub mod config;
pub mod db;
pub mod idempotency;
pub mod money;
pub mod paging;
pub mod request_id;
pub mod server;
pub mod telemetry;
pub mod uscc;

pub use money::Money;
pub use request_id::RequestId;
pub use uscc::Uscc;
