//! Budget storage: plain queries over a transaction (or the pool of connections) handed in,
//! one file per table. Nothing here decides anything; the writer in `ops` holds the pool's
//! lock, asks the domain, and writes what it decided through these functions in set-based
//! statements (multi-row `VALUES`, the same SQL on PostgreSQL and SQLite).

pub mod checkpoints;
pub mod gauges;
pub mod keys;
pub mod ledger;
pub mod pools;
pub mod reservations;
pub mod usage;

use sqlx::{Any, Transaction};
use subsidy_common::db::{Backend, Db, DbError};

/// A write transaction.
pub type Tx = Transaction<'static, Any>;

/// Migrations of each backend, embedded at compile time.
pub static MIGRATIONS_POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
/// Migrations of each backend, embedded at compile time.
pub static MIGRATIONS_SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The budget's database and its clock.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
    now_sql: String,
}

impl Store {
    /// A store over `db` judging time by the database clock.
    pub fn new(db: Db) -> Self {
        Self::with_clock_offset(db, 0)
    }

    /// A store whose clock is the database clock plus `offset_us`. Tests use this to move time
    /// forward without waiting; the service itself always uses offset 0.
    pub fn with_clock_offset(db: Db, offset_us: i64) -> Self {
        let now_sql = format!("({} + {offset_us})", db.now_us_sql());
        Store { db, now_sql }
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// SQL for the store's clock in microseconds.
    pub fn now_sql(&self) -> &str {
        &self.now_sql
    }

    /// Applies the budget migrations.
    pub async fn migrate(&self) -> Result<(), DbError> {
        self.db
            .migrate(&MIGRATIONS_POSTGRES, &MIGRATIONS_SQLITE)
            .await
    }

    /// Begins a write transaction (`BEGIN IMMEDIATE` on SQLite).
    pub async fn begin(&self) -> Result<Tx, DbError> {
        self.db.begin_write().await
    }

    /// Whether row locks must be asked for (`FOR UPDATE`); SQLite's write transaction already
    /// excludes every other writer.
    pub fn locks_rows(&self) -> bool {
        self.db.backend == Backend::Postgres
    }

    /// The store's time, µs.
    pub async fn now_us(&self) -> Result<i64, DbError> {
        Ok(
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {}", self.now_sql)))
                .fetch_one(&self.db.pool)
                .await?,
        )
    }
}

pub use subsidy_common::db::{Kind, bind_padding, padded, padded_in, padded_insert, placeholders};

/// `count` placeholders numbered from `$first`, comma-separated: `$2, $3, $4`.
pub fn list(count: usize, first: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_rows_then_columns() {
        assert_eq!(
            (padded(0), padded(1), padded(3), padded(64), padded(65)),
            (1, 1, 4, 64, 128)
        );
        assert_eq!(padded_in(&["a", "b", "c"]), ["a", "b", "c", "a"]);
        assert_eq!(
            padded_insert("INSERT INTO t (a, b)", "*", 3, &[Kind::Text, Kind::Int], ""),
            "INSERT INTO t (a, b) SELECT * FROM (VALUES ($1, $2), ($3, $4), ($5, $6), ($7, $8)) \
             AS v WHERE v.column1 IS NOT NULL "
        );
        assert_eq!(placeholders(2, 2, 1), "($1, $2), ($3, $4)");
        assert_eq!(placeholders(1, 3, 4), "($4, $5, $6)");
        assert_eq!(list(3, 2), "$2, $3, $4");
    }
}
