//! Bounded storage: rows past their retention are deleted in small batches, by every replica
//! (a row deleted by one is simply not found by the other), never the ledger, the history or
//! the audit trail. Each service declares its [`Rule`]s; [`serve`](crate::server::serve) runs
//! them every `database.prune_interval_ms`.

use std::time::Duration;

use crate::db::{Db, DbError};

/// One kind of row to prune: `statements` run in order in one transaction, with `$1` the
/// cutoff (microseconds since the Unix epoch: rows older than it go) and `$2` the batch size
/// where they use them (`$2` only after `$1`), batch after batch until no statement reaches a
/// full batch.
#[derive(Clone, Debug)]
pub struct Rule {
    /// What is pruned, for the logs.
    pub name: &'static str,
    /// How long the rows are kept.
    pub retention: Duration,
    /// The statements of one batch.
    pub statements: Vec<String>,
}

impl Rule {
    /// The idempotency records (`idempotency_keys`) of completed requests older than
    /// `retention`: the replay window of a `request_id`.
    pub fn idempotency_keys(retention: Duration) -> Rule {
        Rule {
            name: "idempotency records",
            retention,
            statements: vec![
                "DELETE FROM idempotency_keys WHERE request_id IN (SELECT request_id FROM idempotency_keys \
                 WHERE created_us < $1 AND response IS NOT NULL ORDER BY created_us LIMIT $2)"
                    .to_owned(),
            ],
        }
    }
}

/// Most batches of one rule in one round (a round never runs for long; the next continues).
pub const BATCHES_PER_ROUND_MAX: usize = 100;

/// Runs every rule once at `now_us`: batches until a batch deletes less than `batch` rows (or
/// [`BATCHES_PER_ROUND_MAX`]). Returns, per rule, the rows of its busiest statement per batch,
/// added up.
pub async fn prune_once(
    db: &Db,
    rules: &[Rule],
    batch: u32,
    now_us: i64,
) -> Result<Vec<(&'static str, u64)>, DbError> {
    let mut deleted = Vec::new();
    for rule in rules {
        let retention_us = i64::try_from(rule.retention.as_micros()).unwrap_or(i64::MAX);
        let cutoff_us = now_us.saturating_sub(retention_us);
        let mut total = 0;
        for _ in 0..BATCHES_PER_ROUND_MAX {
            let mut tx = db.begin_write().await?;
            let mut most = 0;
            for statement in &rule.statements {
                // `$1` and `$2` are bound where the statement uses them.
                let mut query = sqlx::query(sqlx::AssertSqlSafe(statement.as_str()));
                if statement.contains("$1") {
                    query = query.bind(cutoff_us);
                }
                if statement.contains("$2") {
                    query = query.bind(i64::from(batch));
                }
                most = most.max(query.execute(&mut *tx).await?.rows_affected());
            }
            tx.commit().await?;
            total += most;
            if most < u64::from(batch) {
                break;
            }
        }
        deleted.push((rule.name, total));
    }
    Ok(deleted)
}

/// Prunes by `rules` every `interval` until `stop` fires; failures are logged and the next
/// round tries again.
pub async fn run(
    db: Db,
    rules: Vec<Rule>,
    interval: Duration,
    batch: u32,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        let now_us = chrono::Utc::now().timestamp_micros();
        match prune_once(&db, &rules, batch, now_us).await {
            Ok(deleted) => {
                for (name, rows) in deleted.into_iter().filter(|(_, rows)| *rows > 0) {
                    tracing::info!(rows, "pruned {name} past their retention");
                }
            }
            Err(error) => tracing::warn!(%error, "pruning failed; the next round tries again"),
        }
    }
}
