//! Application storage: plain queries over a connection or a write transaction handed in, one
//! file per table. A change to a claim, proposal or round loads the row under a lock
//! (`FOR UPDATE` on PostgreSQL; SQLite's `BEGIN IMMEDIATE` already holds the database's write
//! lock), changes it in Rust, and writes it back in the same transaction, together with its
//! history entry, its outbox event and the request's stored response. Storage decides nothing:
//! the use cases in `workflow/` open the transactions and make the changes.

mod claims;
mod decision_links;
mod documents;
mod enterprises;
pub mod exports;
pub mod gauges;
mod history;
mod invoices;
mod outbox;
mod proposals;
mod publicity;
mod requests;
mod rounds;
pub mod statistics;

use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Row, Transaction};
use subsidy_common::db::{Backend, Db, DbError};

pub use claims::{ClaimRow, LineAhead};
pub use decision_links::{DECISION_LINKS_MAX, DecisionLinkRow};
pub use documents::DocumentRow;
pub use enterprises::EnterpriseRow;
pub use history::HistoryRow;
pub use invoices::InvoiceRow;
pub use outbox::OutboxRow;
pub use proposals::ProposalRow;
pub use publicity::{NoticeFilter, NoticeKind, NoticeRow, ObjectionRow};
pub use requests::RequestStatus;
pub use rounds::{RoundRow, ScoreRow};

/// A write transaction.
pub type Tx = Transaction<'static, Any>;

/// A connection a read runs on: a transaction's (`&mut *tx`) or one of the pool's.
pub type Conn = AnyConnection;

/// Migrations of each backend, embedded at compile time.
pub static MIGRATIONS_POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
/// Migrations of each backend, embedded at compile time.
pub static MIGRATIONS_SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

type AnyQuery<'q> = sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>;

fn decode_error(what: &str, value: &str) -> DbError {
    DbError::Other(sqlx::Error::Decode(
        format!("unknown {what} {value:?}").into(),
    ))
}

fn flag(value: bool) -> i64 {
    i64::from(value)
}

/// The columns of a comma-separated column list, trimmed.
fn columns(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim)
}

/// `INSERT INTO table (columns, row_version) VALUES ($1, …, 0)`.
fn insert_sql(table: &str, column_list: &str) -> String {
    let placeholders = (1..=columns(column_list).count())
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("INSERT INTO {table} ({column_list}, row_version) VALUES ({placeholders}, 0)")
}

/// `UPDATE table SET column = $n, … WHERE first column = $1`, bumping the row version; the
/// binds follow the column order.
fn update_sql(table: &str, column_list: &str) -> String {
    let key = columns(column_list)
        .next()
        .expect("a column list names its key first");
    let sets = columns(column_list)
        .enumerate()
        .skip(1)
        .map(|(i, column)| format!("{column} = ${}", i + 1))
        .collect::<Vec<_>>()
        .join(", ");
    format!("UPDATE {table} SET {sets}, row_version = row_version + 1 WHERE {key} = $1")
}

/// Most rows [`Store::save_rows`] writes in one statement (43 claim columns each, well under
/// either backend's limit of bound parameters).
const ROWS_PER_UPDATE_MAX: usize = 64;

/// `WITH v (columns) AS (VALUES ($1, …), …) UPDATE table SET column = v.column, … FROM v
/// WHERE table.key = v.key`, bumping the row version: `rows` rows written back in one
/// statement, each row's binds in column order (the same SQL on PostgreSQL and SQLite).
fn update_many_sql(table: &str, column_list: &str, rows: usize) -> String {
    let count = columns(column_list).count();
    let key = columns(column_list)
        .next()
        .expect("a column list names its key first");
    let values = (0..rows)
        .map(|row| {
            let binds = (1..=count)
                .map(|i| format!("${}", row * count + i))
                .collect::<Vec<_>>()
                .join(", ");
            format!("({binds})")
        })
        .collect::<Vec<_>>()
        .join(", ");
    let sets = columns(column_list)
        .skip(1)
        .map(|column| format!("{column} = v.{column}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "WITH v ({column_list}) AS (VALUES {values}) UPDATE {table} SET {sets}, \
         row_version = {table}.row_version + 1 FROM v WHERE {table}.{key} = v.{key}"
    )
}

/// A table whose rows are read, locked and written back whole, by their key (the first of
/// its columns).
struct Table<T> {
    /// The table.
    name: &'static str,
    /// Its columns, key first, in the order `bind` binds them.
    columns: &'static str,
    /// Reads a row.
    decode: fn(&AnyRow) -> Result<T, DbError>,
    /// Binds every column of a row, in order.
    bind: for<'q> fn(AnyQuery<'q>, &T) -> AnyQuery<'q>,
}

/// A recorded payment of a claim or proposal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    /// Payment reference.
    pub reference: String,
    /// Payment date `YYYY-MM-DD`.
    pub date: String,
    /// Paid, fen.
    pub fen: i64,
    /// Who recorded the payment.
    pub by: String,
    /// When the payment was recorded, µs.
    pub recorded_us: i64,
}

/// The payment columns of a claim or proposal row, shared by both tables (each table's column
/// list holds them in this order, where `bind_payment` binds them).
#[cfg(test)]
const PAYMENT_COLUMNS: &str =
    "payment_reference, payment_date, disbursed_fen, disbursed_by, disbursed_us";

fn payment_of(row: &AnyRow) -> Result<Option<Payment>, sqlx::Error> {
    let recorded_us: Option<i64> = row.try_get("disbursed_us")?;
    let Some(recorded_us) = recorded_us else {
        return Ok(None);
    };
    Ok(Some(Payment {
        reference: row.try_get("payment_reference")?,
        date: row.try_get("payment_date")?,
        fen: row.try_get("disbursed_fen")?,
        by: row.try_get("disbursed_by")?,
        recorded_us,
    }))
}

/// Binds the [`PAYMENT_COLUMNS`] of `payment` (empty when unpaid).
fn bind_payment<'q>(query: AnyQuery<'q>, payment: &Option<Payment>) -> AnyQuery<'q> {
    match payment {
        Some(p) => query
            .bind(p.reference.clone())
            .bind(p.date.clone())
            .bind(p.fen)
            .bind(p.by.clone())
            .bind(Some(p.recorded_us)),
        None => query
            .bind("")
            .bind("")
            .bind(0_i64)
            .bind("")
            .bind(None::<i64>),
    }
}

/// The application service's database and its clock.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
    now: String,
}

impl Store {
    /// A store over `db` judging time by the database clock.
    pub fn new(db: Db) -> Self {
        let now = db.now_us_sql().to_owned();
        Store { db, now }
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The SQL of the database clock in microseconds.
    pub fn now_sql(&self) -> &str {
        &self.now
    }

    /// Applies the application migrations.
    pub async fn migrate(&self) -> Result<(), DbError> {
        self.db
            .migrate(&MIGRATIONS_POSTGRES, &MIGRATIONS_SQLITE)
            .await
    }

    /// Begins a write transaction.
    pub async fn begin(&self) -> Result<Tx, DbError> {
        self.db.begin_write().await
    }

    /// A pooled connection for reads (and for the outbox's single-row updates).
    pub async fn read(&self) -> Result<sqlx::pool::PoolConnection<Any>, DbError> {
        Ok(self.db.pool.acquire().await?)
    }

    /// The row lock of a read-for-change (`FOR UPDATE` on PostgreSQL; SQLite's write
    /// transaction holds the whole database already).
    fn lock_clause(&self, lock: bool) -> &'static str {
        match (lock, self.db.backend) {
            (true, Backend::Postgres) => " FOR UPDATE",
            _ => "",
        }
    }

    /// The row of `table` with key `key`, locked for change when `lock` (in a write
    /// transaction).
    async fn fetch_row<T>(
        &self,
        conn: &mut AnyConnection,
        table: &Table<T>,
        key: &str,
        lock: bool,
    ) -> Result<Option<T>, DbError> {
        let key_column = columns(table.columns)
            .next()
            .expect("a column list names its key first");
        let sql = format!(
            "SELECT {} FROM {} WHERE {key_column} = $1{}",
            table.columns,
            table.name,
            self.lock_clause(lock)
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(key)
            .fetch_optional(conn)
            .await?;
        row.as_ref().map(table.decode).transpose()
    }

    /// Inserts `row` into `table` (`then` is appended to the statement, e.g. an
    /// `ON CONFLICT` clause); the number of rows inserted.
    async fn insert_row<T>(
        &self,
        tx: &mut Tx,
        table: &Table<T>,
        row: &T,
        then: &str,
    ) -> Result<u64, DbError> {
        let sql = format!("{}{then}", insert_sql(table.name, table.columns));
        Ok((table.bind)(sqlx::query(sqlx::AssertSqlSafe(sql)), row)
            .execute(&mut **tx)
            .await?
            .rows_affected())
    }

    /// Writes back a row of `table` locked in `tx`.
    async fn save_row<T>(&self, tx: &mut Tx, table: &Table<T>, row: &T) -> Result<(), DbError> {
        let sql = update_sql(table.name, table.columns);
        let updated = (table.bind)(sqlx::query(sqlx::AssertSqlSafe(sql)), row)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        assert_eq!(
            updated, 1,
            "a locked row of {} is updated exactly once",
            table.name
        );
        Ok(())
    }

    /// Writes back rows of `table` locked in `tx`, [`ROWS_PER_UPDATE_MAX`] to a statement.
    async fn save_rows<T>(&self, tx: &mut Tx, table: &Table<T>, rows: &[T]) -> Result<(), DbError> {
        for chunk in rows.chunks(ROWS_PER_UPDATE_MAX) {
            let sql = update_many_sql(table.name, table.columns, chunk.len());
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for row in chunk {
                query = (table.bind)(query, row);
            }
            let updated = query.execute(&mut **tx).await?.rows_affected();
            assert_eq!(
                updated,
                chunk.len() as u64,
                "each locked row of {} is updated exactly once",
                table.name
            );
        }
        Ok(())
    }

    /// The database clock, µs.
    pub async fn now_us(&self, conn: &mut AnyConnection) -> Result<i64, DbError> {
        let now: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {}", self.now)))
            .fetch_one(conn)
            .await?;
        Ok(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_statements_bind_every_column_in_order() {
        // Proves the insert and update statements name each column once, key first.
        assert_eq!(
            insert_sql("t", "id, a, b"),
            "INSERT INTO t (id, a, b, row_version) VALUES ($1, $2, $3, 0)"
        );
        assert_eq!(
            update_sql("t", "id, a,\n b"),
            "UPDATE t SET a = $2, b = $3, row_version = row_version + 1 WHERE id = $1"
        );
        assert_eq!(
            update_many_sql("t", "id, a,\n b", 2),
            "WITH v (id, a,\n b) AS (VALUES ($1, $2, $3), ($4, $5, $6)) UPDATE t SET a = v.a, \
             b = v.b, row_version = t.row_version + 1 FROM v WHERE t.id = v.id"
        );
    }
}
