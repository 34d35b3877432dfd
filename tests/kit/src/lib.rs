//! The test kit of the subsidy services: what every crate's tests and the cross-service tests
//! share. It depends only on the contract (`subsidy-proto`) and the platform
//! (`subsidy-common`); the services under test are handed in by the caller, so that a crate's
//! own tests never pull another service in.
//!
//! - [`stack`]: runs services in-process, each on its own port 0 listener and fresh database;
//! - [`processes`]: runs them instead as real `subsidy serve` processes, restarted when they
//!   die (armed with named crash points for the crash tests);
//! - [`fakes`]: serves a test's own implementation of a peer in the stack, such as
//!   [`ScriptedRules`];
//! - [`wait`]: [`eventually`] for asynchronous outcomes;
//! - [`otlp`]: a real OTLP/gRPC receiver that keeps the spans and metrics it is sent;
//! - [`money`], [`ids`], [`requests`], [`rounds`], [`budget`]: values, requests and reads the
//!   tests make again and again.
#![forbid(unsafe_code)]

pub mod auth;
pub mod budget;
pub mod fakes;
pub mod ids;
pub mod money;
pub mod otlp;
pub mod outage;
pub mod processes;
pub mod requests;
pub mod rounds;
pub mod scrape;
pub mod scripted_rules;
pub mod stack;
pub mod wait;

pub use auth::{Channel, Credentials, Transport};
pub use budget::{LONG_HOLD_SECONDS, POOL_2025_FEN, TEST_POOL, test_pool_application};
pub use ids::{beijing, seller, shandong};
pub use money::{cny, fen_of, yuan};
pub use scripted_rules::{ENTERPRISE_CAP_FEN, PROJECT_CAP_FEN, ScriptedRules};
pub use stack::{Launch, Overrides, Replica, Stack, loopback_webhooks, quick_application};
pub use wait::eventually;

/// The rows of a check query over `db`, with `binds` bound to `$1`, `$2`, … in order: what the
/// invariant checks of the tests read before comparing columns.
pub async fn query_rows(
    db: &subsidy_common::db::Db,
    sql: &'static str,
    binds: &[&str],
) -> Vec<sqlx::any::AnyRow> {
    let mut query: sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments> = sqlx::query(sql);
    for value in binds {
        query = query.bind(*value);
    }
    query
        .fetch_all(&db.pool)
        .await
        .expect("run the check query")
}

/// Counts rows of a table in a database.
pub async fn count(db: &subsidy_common::db::Db, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM {table}"
    )))
    .fetch_one(&db.pool)
    .await
    .expect("count rows")
}
