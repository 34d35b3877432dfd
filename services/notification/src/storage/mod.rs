//! Notification storage: plain queries over the feed of events, the subscriptions and the
//! durable delivery queue, one file per table (the worker's queue queries in `queue`).
//!
//! A query that changes rows takes the transaction of the use case that called it (`ops`,
//! which begins it on [`Store::db`] and decides what to change); reads that need no
//! transaction use the pool. Queries answer the driver's error; `error.rs` classifies it. Row locks
//! are always taken in the order deliveries → subscriptions → feed head, so that the worker,
//! the RPCs and several replicas never wait on each other in a cycle: callers keep that order.
//! Times are judged by the database clock (`now` below), never by the pod's.
//!
//! The store also carries the two pieces of configuration its users need beyond SQL: the key
//! that seals signing secrets at rest (`secrets`: they are sealed on write and opened on read,
//! and nothing else sees them encrypted) and the operator's allow-list of webhook hosts, which
//! the use cases check endpoints against. [`Store::open`] sets both from the configuration.

pub mod deliveries;
pub mod events;
pub mod gauges;
pub mod queue;
pub mod secrets;
pub mod subscriptions;

use std::sync::Arc;

use sqlx::{Any, Transaction};
use subsidy_common::BoxError;
use subsidy_common::config::Config;
use subsidy_common::db::{Backend, Db};

use crate::domain::address::AllowList;
use crate::settings::Settings;

pub use deliveries::{AttemptRow, DeliveryRow};
pub use events::StoredEvent;
pub use queue::{AttemptLog, Candidate, Claimed};
pub use secrets::{SecretError, SecretKey, StoredSecrets};
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

/// The notification database: a pool of connections and the SQL of its clock, with the key
/// that seals signing secrets and the allow-list of webhook hosts.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
    now: &'static str,
    secret_key: Option<SecretKey>,
    allow_list: Arc<AllowList>,
}

impl Store {
    /// A store over `db` judging time by the database clock, without a secret key (it can
    /// neither store nor read signing secrets: enough for migrations and inspection) and with
    /// an empty allow-list. The service uses [`Store::open`].
    pub fn new(db: Db) -> Self {
        let now = db.now_us_sql();
        Store {
            db,
            now,
            secret_key: None,
            allow_list: Arc::new(AllowList::default()),
        }
    }

    /// The store of the running service over `db` (migrated already): the secret key and
    /// the allow-list as `config` says (`notification.secret_key_file`, by the rule of
    /// [`secrets::load_secret_key`]; `notification.webhook_allowed_hosts`). The service then
    /// seals signing secrets stored in plaintext by an earlier version
    /// (`ops::secrets::seal_plaintext_secrets`) before anything is served.
    pub fn open(db: Db, config: &Config) -> Result<Store, BoxError> {
        let settings: Settings = config.section()?;
        let key = secrets::load_secret_key(&settings.secret_key_file, &config.database.url)?;
        let allow_list = AllowList::parse(&settings.webhook_allowed_hosts)?;
        Ok(Store::new(db)
            .with_secret_key(key)
            .with_allow_list(allow_list))
    }

    /// The same store sealing and opening signing secrets with `key`.
    pub fn with_secret_key(mut self, key: SecretKey) -> Self {
        self.secret_key = Some(key);
        self
    }

    /// The same store with the operator's allow-list of webhook hosts.
    pub fn with_allow_list(mut self, allow_list: AllowList) -> Self {
        self.allow_list = Arc::new(allow_list);
        self
    }

    /// The hosts, addresses and networks webhooks may reach although internal.
    pub fn allow_list(&self) -> &AllowList {
        &self.allow_list
    }

    /// The key signing secrets are sealed with.
    fn secret_key(&self) -> Result<&SecretKey, SecretError> {
        self.secret_key.as_ref().ok_or(SecretError::NoKey)
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
