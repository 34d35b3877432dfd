//! The test kit of the subsidy services: what every crate's tests and the cross-service tests
//! share. It depends only on the contract (`subsidy-proto`) and the platform
//! (`subsidy-common`); the services under test are handed in by the caller, so that a crate's
//! own tests never pull another service in.
//!
//! - [`stack`]: runs services in-process, each on its own port 0 listener and fresh database;
//! - [`wait`]: [`eventually`] for asynchronous outcomes;
//! - [`money`], [`ids`], [`requests`]: values and requests the tests build again and again.
#![forbid(unsafe_code)]

pub mod ids;
pub mod money;
pub mod requests;
pub mod stack;
pub mod wait;

pub use ids::{beijing, seller, shandong};
pub use money::{cny, fen_of, yuan};
pub use stack::{Launch, Overrides, Stack};
pub use wait::eventually;

/// Counts rows of a table in a database.
pub async fn count(db: &subsidy_common::db::Db, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM {table}"
    )))
    .fetch_one(&db.pool)
    .await
    .expect("count rows")
}
