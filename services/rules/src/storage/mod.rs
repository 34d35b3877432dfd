//! Rules storage: published policy versions (immutable rows, in publication order), the
//! denylist (replaced whole), the stored decisions (immutable rows, one per evaluation), and
//! the `rules_state` row holding the generation counters every replica compares before an
//! evaluation.
//!
//! Plain queries over a pool or a write transaction handed in; the use cases (`ops`) open the
//! transactions, claim the idempotency keys and decide. A write takes the `rules_state` row
//! first ([`policies::next_publication`], [`denylist::mark_replaced`]), so that publications
//! and replacements are serialised and their sequence numbers commit in order.

pub mod decisions;
pub mod denylist;
pub mod policies;
pub mod registry;

use chrono::NaiveDate;
use sqlx::{Any, AnyPool, Row, Transaction};
use subsidy_common::db::{Db, DbError};

/// A write transaction handed to the queries by a use case.
pub type Tx = Transaction<'static, Any>;

/// Migrations of each backend, embedded at compile time.
pub static MIGRATIONS_POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
/// Migrations of each backend, embedded at compile time.
pub static MIGRATIONS_SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The rules database: its pool and the SQL of its clock.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
}

impl Store {
    /// A store over `db`.
    pub fn new(db: Db) -> Self {
        Store { db }
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The pool, for reads.
    pub fn pool(&self) -> &AnyPool {
        &self.db.pool
    }

    /// SQL for the database clock in microseconds; stored times come from the database's clock.
    pub fn now_us_sql(&self) -> &'static str {
        self.db.now_us_sql()
    }

    /// Applies the rules migrations.
    pub async fn migrate(&self) -> Result<(), DbError> {
        self.db
            .migrate(&MIGRATIONS_POSTGRES, &MIGRATIONS_SQLITE)
            .await
    }
}

/// The change counters of the rules database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Generations {
    /// The publish sequence of the newest policy version.
    pub policy: i64,
    /// How many times the denylist was replaced.
    pub denylist: i64,
}

/// The change counters, read in one statement.
pub async fn generations(pool: &AnyPool) -> Result<Generations, DbError> {
    let row = sqlx::query(
        "SELECT policy_generation, denylist_generation FROM rules_state WHERE singleton = 1",
    )
    .fetch_one(pool)
    .await?;
    Ok(Generations {
        policy: row.try_get("policy_generation")?,
        denylist: row.try_get("denylist_generation")?,
    })
}

/// A stored value this code did not write.
fn decode_error(what: String) -> DbError {
    DbError::Other(sqlx::Error::Decode(what.into()))
}

/// A stored `YYYY-MM-DD` day.
fn day(text: &str) -> Result<NaiveDate, DbError> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| decode_error(format!("bad date {text}")))
}
