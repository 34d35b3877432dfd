//! A service's database taken away and given back, as an operator sees it happen.
//!
//! - PostgreSQL: the service's database stops taking connections (`CONNECTION LIMIT 0`, which
//!   only superusers pass, so the test's own owner connection still works) and the runtime
//!   role's sessions there are terminated (`pg_terminate_backend`): every pooled connection
//!   breaks and no new one is let in, as when the server goes away (the service sees SQLSTATE
//!   57P01 and 53300, both "not there right now"). Giving it back lifts the limit. Other tests'
//!   databases on the same server are untouched (the limit is per database).
//! - SQLite: another connection takes the file's write lock (`BEGIN IMMEDIATE`) and holds it,
//!   as a backup tool or an operator's `sqlite3` session would, so every write of the service
//!   waits out its busy timeout and fails; giving it back rolls that transaction back. A SQLite
//!   file cannot become unreachable the way a server can, so readiness (which asks the database
//!   for `SELECT 1`) is tested on PostgreSQL only.

use sqlx::Any;
use subsidy_common::config::ServiceKind;
use subsidy_common::db::{Backend, Db, RUNTIME_ROLE};

use crate::stack::Stack;

/// A database taken away from its service; [`Outage::end`] gives it back.
pub struct Outage {
    owner: Db,
    /// The SQLite transaction holding the write lock.
    lock: Option<sqlx::Transaction<'static, Any>>,
}

impl std::fmt::Debug for Outage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outage")
            .field("backend", &self.owner.backend)
            .finish()
    }
}

impl Outage {
    /// Takes the database of `kind` in `stack` away from the service.
    pub async fn begin(stack: &Stack, kind: ServiceKind) -> Outage {
        let owner = stack.database(kind).await;
        match owner.backend {
            Backend::Postgres => {
                let name = database_name(&owner).await;
                for statement in [
                    format!("ALTER DATABASE \"{name}\" CONNECTION LIMIT 0"),
                    format!(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND usename = '{RUNTIME_ROLE}'"
                    ),
                ] {
                    sqlx::query(sqlx::AssertSqlSafe(statement))
                        .execute(&owner.pool)
                        .await
                        .expect("take the database away from the runtime role");
                }
                Outage { owner, lock: None }
            }
            Backend::Sqlite => {
                let lock = owner
                    .begin_write()
                    .await
                    .expect("take the SQLite write lock");
                Outage {
                    owner,
                    lock: Some(lock),
                }
            }
        }
    }

    /// Gives the database back.
    pub async fn end(self) {
        match self.lock {
            Some(lock) => lock
                .rollback()
                .await
                .expect("release the SQLite write lock"),
            None => {
                let name = database_name(&self.owner).await;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "ALTER DATABASE \"{name}\" CONNECTION LIMIT -1"
                )))
                .execute(&self.owner.pool)
                .await
                .expect("give the database back to the runtime role");
            }
        }
    }
}

/// The name of the PostgreSQL database `db` is connected to.
async fn database_name(db: &Db) -> String {
    sqlx::query_scalar("SELECT CAST(current_database() AS TEXT)")
        .fetch_one(&db.pool)
        .await
        .expect("the database's name")
}
