//! Database access on PostgreSQL (production) or SQLite (the embedded default), through one
//! code path: sqlx's `Any` driver with portable SQL (`$1` placeholders, `RETURNING`,
//! `ON CONFLICT`, integer fen and integer microseconds).
//!
//! SQLite runs in WAL mode with a busy timeout, and every write transaction starts with
//! `BEGIN IMMEDIATE` so that writers queue for the lock instead of failing half-way.

use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Transaction};

/// The PostgreSQL role services connect as (created by the migrations when missing): it may
/// read and write, but not change or remove audit, history, ledger or publication records.
pub const RUNTIME_ROLE: &str = "subsidy_runtime";

/// How long a SQLite writer waits for the lock, in milliseconds.
pub const SQLITE_BUSY_TIMEOUT_MS: u64 = 10_000;

/// Which database a service runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL.
    Postgres,
    /// SQLite.
    Sqlite,
}

/// A database failure, classified for the gRPC edge.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database could not be reached or the connection broke; the call may be retried.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Anything else: a bug or a schema problem.
    #[error("database error: {0}")]
    Other(#[source] sqlx::Error),
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The URL is neither postgres nor sqlite, or its directory cannot be created.
    #[error("bad database url {0}")]
    Url(String),
}

impl From<sqlx::Error> for DbError {
    fn from(error: sqlx::Error) -> Self {
        if is_unavailable(&error) {
            DbError::Unavailable(error)
        } else {
            DbError::Other(error)
        }
    }
}

impl DbError {
    /// Whether the database refused a write by a CHECK constraint: a backstop of an invariant
    /// the code should have kept (a bug, never the caller's fault).
    pub fn is_check_violation(&self) -> bool {
        match self {
            DbError::Other(sqlx::Error::Database(db)) => {
                db.code().as_deref() == Some("23514")
                    || db.message().contains("CHECK constraint failed")
            }
            _ => false,
        }
    }
}

/// Whether an error means "the database is not there right now" rather than a bug: broken or
/// refused connections, pool time-outs, a terminated backend (SQLSTATE 57P01 and class 08),
/// or SQLite's lock time-out.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            code.starts_with("08")
                || code.starts_with("57P")
                || code == "53300"
                || code == "5"
                || code == "6"
                || db.message().contains("database is locked")
        }
        _ => false,
    }
}

/// A connection pool and the backend behind it.
#[derive(Clone, Debug)]
pub struct Db {
    /// The pool.
    pub pool: AnyPool,
    /// The backend.
    pub backend: Backend,
}

impl Db {
    /// Connects to `url` (`postgres://…` or `sqlite:PATH`); for SQLite the file and its
    /// directory are created when missing and the database is switched to WAL.
    pub async fn connect(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_owned())
        } else if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = rest.trim_start_matches("//");
            let file = path.split('?').next().unwrap_or_default();
            if file.is_empty() || file == ":memory:" {
                return Err(DbError::Url(format!("{url}: a file path is required")));
            }
            if let Some(dir) = Path::new(file)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir).map_err(|e| DbError::Url(format!("{url}: {e}")))?;
            }
            let separator = if path.contains('?') { '&' } else { '?' };
            let url = if path.contains("mode=") {
                format!("sqlite:{path}")
            } else {
                format!("sqlite:{path}{separator}mode=rwc")
            };
            (Backend::Sqlite, url)
        } else {
            return Err(DbError::Url(url.to_owned()));
        };
        let options: AnyConnectOptions = url
            .parse()
            .map_err(|e: sqlx::Error| DbError::Url(e.to_string()))?;
        let mut pool_options = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(acquire_timeout)
            // A connection that broke (a terminated backend) is tested before it is handed out.
            .test_before_acquire(true);
        if backend == Backend::Sqlite {
            pool_options = pool_options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    use sqlx::Executor;
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    Ok(())
                })
            });
        }
        let pool = pool_options.connect_with(options).await?;
        Ok(Db { pool, backend })
    }

    /// Connects as the `[database]` section says.
    pub async fn open(config: &crate::config::DatabaseConfig) -> Result<Db, DbError> {
        Self::connect(
            &config.url,
            config.max_connections,
            Duration::from_millis(config.acquire_timeout_ms),
        )
        .await
    }

    /// One connection as the `[database]` section says for applying migrations: the owner's
    /// (`database.owner_url`), or the service's own when none is set.
    pub async fn open_for_migrations(
        config: &crate::config::DatabaseConfig,
    ) -> Result<Db, DbError> {
        let url = if config.owner_url.is_empty() {
            &config.url
        } else {
            &config.owner_url
        };
        Self::connect(url, 1, Duration::from_millis(config.acquire_timeout_ms)).await
    }

    /// Begins a write transaction: `BEGIN IMMEDIATE` on SQLite, `BEGIN` (READ COMMITTED) on
    /// PostgreSQL, where correctness comes from conditional updates and row locks.
    pub async fn begin_write(&self) -> Result<Transaction<'static, Any>, DbError> {
        let tx = match self.backend {
            Backend::Postgres => self.pool.begin().await?,
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
        };
        Ok(tx)
    }

    /// Begins a read-only transaction whose every query reads one snapshot of the database,
    /// however many writers commit meanwhile: `REPEATABLE READ READ ONLY` on PostgreSQL; on
    /// SQLite (WAL) a deferred transaction, whose first read fixes the snapshot until it ends.
    /// For checks that compare several tables (the budget's ledger verification).
    pub async fn begin_snapshot(&self) -> Result<Transaction<'static, Any>, DbError> {
        let tx = match self.backend {
            Backend::Postgres => {
                self.pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?
            }
            Backend::Sqlite => self.pool.begin_with("BEGIN DEFERRED").await?,
        };
        Ok(tx)
    }

    /// SQL for the database clock in microseconds since the Unix epoch. The budget judges
    /// expiry with this, never with the pod's clock.
    pub fn now_us_sql(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => {
                "(CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT))"
            }
            Backend::Sqlite => "(CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER))",
        }
    }

    /// Applies the migrations of the matching backend.
    pub async fn migrate(
        &self,
        postgres: &sqlx::migrate::Migrator,
        sqlite: &sqlx::migrate::Migrator,
    ) -> Result<(), DbError> {
        match self.backend {
            Backend::Postgres => postgres.run(&self.pool).await?,
            Backend::Sqlite => sqlite.run(&self.pool).await?,
        }
        Ok(())
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }
}

/// The condition restricting `column` to `allowed` (numbered from `$first`), or nothing when
/// there is no restriction; an empty restriction matches nothing. Bind `allowed` in order.
pub fn restricted_to(column: &str, allowed: Option<&[String]>, first: usize) -> String {
    match allowed {
        None => String::new(),
        Some([]) => " AND 1 = 0".to_owned(),
        Some(values) => format!(
            " AND {column} IN ({})",
            (first..first + values.len())
                .map(|index| format!("${index}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Rows of one batch statement are padded to the next power of two (at most ten sizes up to
/// 512), so that each statement's text repeats and is prepared once per connection: an
/// unprepared statement costs the database a parse and a plan every time, and a batch runs
/// about ten of them.
pub fn padded(rows: usize) -> usize {
    rows.max(1).next_power_of_two()
}

/// The type of a column, to bind the NULLs of padding rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// TEXT.
    Text,
    /// BIGINT.
    Int,
    /// BYTEA / BLOB.
    Bytes,
}

/// An insert of `rows` rows of `kinds.len()` values (padded with rows of NULLs, which the
/// statement skips): `{head} SELECT {select} FROM (VALUES …) AS v WHERE v.column1 IS NOT NULL
/// {tail}`. PostgreSQL and SQLite both name a `VALUES` list's columns `column1`, `column2`, ….
/// The first value of a real row is never NULL.
pub fn padded_insert(head: &str, select: &str, rows: usize, kinds: &[Kind], tail: &str) -> String {
    format!(
        "{head} SELECT {select} FROM (VALUES {}) AS v WHERE v.column1 IS NOT NULL {tail}",
        placeholders(padded(rows), kinds.len(), 1)
    )
}

/// Binds the NULL values of the padding rows of a [`padded_insert`] of `rows` rows.
pub fn bind_padding<'q>(
    mut query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
    kinds: &[Kind],
    rows: usize,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments> {
    for _ in rows..padded(rows) {
        for kind in kinds {
            query = match kind {
                Kind::Text => query.bind(None::<String>),
                Kind::Int => query.bind(None::<i64>),
                Kind::Bytes => query.bind(None::<Vec<u8>>),
            };
        }
    }
    query
}

/// `values` padded to [`padded`] length by repeating the first (which changes nothing an
/// `IN (…)` list means).
pub fn padded_in<'a>(values: &[&'a str]) -> Vec<&'a str> {
    let mut padded_values = values.to_vec();
    if let Some(first) = values.first() {
        padded_values.resize(padded(values.len()), first);
    }
    padded_values
}

/// `rows` groups of `columns` placeholders, numbered from `$first`: `($1, $2), ($3, $4)`.
pub fn placeholders(rows: usize, columns: usize, first: usize) -> String {
    let mut text = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        if row > 0 {
            text.push_str(", ");
        }
        text.push('(');
        for column in 0..columns {
            if column > 0 {
                text.push_str(", ");
            }
            text.push('$');
            text.push_str(&(first + row * columns + column).to_string());
        }
        text.push(')');
    }
    text
}

/// Test support: a fresh, empty database per test on the backend chosen by the environment.
pub mod testing {

    /// The backend tests run against: `SUBSIDY_TEST_DATABASE=postgres://…` selects PostgreSQL
    /// (each test gets a database of its own on that server); unset or `sqlite` selects a
    /// SQLite file in a temporary directory.
    pub fn test_backend() -> Option<String> {
        std::env::var("SUBSIDY_TEST_DATABASE")
            .ok()
            .filter(|v| v.starts_with("postgres"))
    }

    /// The runtime role's password in tests (`scripts/test` gives the role this password on
    /// servers that ask for one; a trust-auth server ignores it).
    pub const TEST_RUNTIME_PASSWORD: &str = "subsidy_runtime";

    /// A database made for one test, dropped by nobody (PostgreSQL databases are named
    /// `subsidy_test_<uuid>`; `scripts/test` removes leftovers before a run).
    #[derive(Debug, Clone)]
    pub struct TestDatabase {
        /// The URL of the database's owner (migrations, and tests that inspect or tamper).
        pub url: String,
    }

    impl TestDatabase {
        /// The URL a service connects with: on PostgreSQL the runtime role
        /// (`subsidy_runtime`, created by the migrations), without UPDATE or DELETE on the
        /// records; on SQLite the same file.
        pub fn runtime_url(&self) -> String {
            match self.url.split_once("://") {
                Some((scheme, rest)) if scheme.starts_with("postgres") => {
                    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
                    format!(
                        "{scheme}://{}:{TEST_RUNTIME_PASSWORD}@{host}",
                        super::RUNTIME_ROLE
                    )
                }
                _ => self.url.clone(),
            }
        }
    }

    /// Creates a fresh database and returns its URL.
    pub async fn fresh_database(label: &str) -> TestDatabase {
        let name = format!("subsidy_test_{}_{}", label, uuid::Uuid::new_v4().simple());
        match test_backend() {
            Some(server) => {
                sqlx::any::install_default_drivers();
                use sqlx::Connection;
                let mut admin = sqlx::AnyConnection::connect(&server)
                    .await
                    .expect("connect to the test PostgreSQL server");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                    .execute(&mut admin)
                    .await
                    .expect("create a test database");
                let base = match server.rfind('/') {
                    Some(i) if i > "postgres://".len() => &server[..i],
                    _ => server.as_str(),
                };
                TestDatabase {
                    url: format!("{base}/{name}"),
                }
            }
            None => {
                let dir = std::env::temp_dir().join("subsidy-tests");
                std::fs::create_dir_all(&dir).expect("create temp dir");
                TestDatabase {
                    url: format!("sqlite:{}/{name}.db", dir.display()),
                }
            }
        }
    }
}
