//! Notification storage: plain queries over the feed of events, the subscriptions and the
//! durable delivery queue, one file per table (the worker's queue queries in `queue`).
//!
//! A query that changes rows takes the transaction of the use case that called it (`ops`,
//! which begins it on [`Store::db`] and decides what to change); reads that need no
//! transaction use the pool. Queries answer the driver's error; `error.rs` classifies it. Row locks
//! are always taken in the order deliveries → subscriptions → feed head, so that the worker,
//! the RPCs and several replicas never wait on each other in a cycle: callers keep that order.
//! Times are judged by the database clock (`now` below), never by the pod's.

pub mod deliveries;
pub mod events;
pub mod queue;
pub mod subscriptions;

use sqlx::{Any, Transaction};
use subsidy_common::BoxError;
use subsidy_common::db::{Backend, Db};

pub use deliveries::{AttemptRow, DeliveryRow};
pub use events::StoredEvent;
pub use queue::{AttemptLog, Candidate, Claimed};
pub use subscriptions::{FailureRun, SubscriptionRow, WebhookTarget};

/// Migrations of each backend, embedded at compile time.
pub static MIGRATIONS_POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
/// Migrations of each backend, embedded at compile time.
pub static MIGRATIONS_SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// A write transaction handed to the queries by a use case.
pub type Tx = Transaction<'static, Any>;

/// The states in which a delivery is not finished.
const UNFINISHED: &str = "('PENDING', 'IN_FLIGHT', 'FAILED_RETRYING')";
/// The states in which a delivery waits for its next attempt.
const WAITING: &str = "('PENDING', 'FAILED_RETRYING')";
/// The states in which a delivery is finished.
const FINISHED: &str = "('DELIVERED', 'DEAD_LETTERED', 'CANCELLED')";
/// Microseconds in a millisecond.
const US_PER_MS: i64 = 1_000;

/// The notification database: a pool of connections and the SQL of its clock.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
    now: &'static str,
}

impl Store {
    /// A store over `db` judging time by the database clock.
    pub fn new(db: Db) -> Self {
        let now = db.now_us_sql();
        Store { db, now }
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// SQL for the database clock in microseconds since the epoch.
    pub fn now_sql(&self) -> &'static str {
        self.now
    }

    /// Applies the notification migrations.
    pub async fn migrate(&self) -> Result<(), BoxError> {
        self.db
            .migrate(&MIGRATIONS_POSTGRES, &MIGRATIONS_SQLITE)
            .await?;
        Ok(())
    }

    /// The lock clause that lets several workers claim disjoint deliveries on PostgreSQL;
    /// SQLite's single writer needs none.
    fn skip_locked(&self) -> &'static str {
        match self.db.backend {
            Backend::Postgres => " FOR UPDATE OF d SKIP LOCKED",
            Backend::Sqlite => "",
        }
    }
}

/// A value bound to a dynamically built query.
enum Arg {
    Text(String),
    Int(i64),
}

fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
    args: Vec<Arg>,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments> {
    for arg in args {
        query = match arg {
            Arg::Text(text) => query.bind(text),
            Arg::Int(value) => query.bind(value),
        };
    }
    query
}

/// A stored value that does not decode: a bug or a schema problem.
fn corrupt(what: String) -> sqlx::Error {
    sqlx::Error::Decode(what.into())
}

/// A stored text that is empty for "none", parsed with `parse` otherwise.
fn optional<T>(
    text: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, sqlx::Error> {
    match text {
        "" => Ok(None),
        text => parse(text).map(Some).map_err(corrupt),
    }
}

/// A delay in milliseconds as microseconds for the database clock.
fn delay_us(delay_ms: u64) -> i64 {
    i64::try_from(delay_ms)
        .unwrap_or(i64::MAX / US_PER_MS)
        .saturating_mul(US_PER_MS)
}
