//! Checking the ledger: every pool's hash chain and balances replayed entry by entry, its
//! stored head, and its counters against the sums over its reservations.

use subsidy_common::db::DbError;

use crate::domain::replay::Replay;
use crate::error::BudgetError;
use crate::storage::{Store, Tx, ledger, pools, reservations};

/// Entries read per query while verifying.
const VERIFY_BATCH_ENTRIES: i64 = 1000;

/// Result of checking the ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries checked.
    pub entries_checked: i64,
    /// The first problem: pool, sequence and what is wrong.
    pub first_problem: Option<(String, i64, String)>,
}

/// Recomputes every pool's hash chain and checks its counters against its reservations, all
/// read in one snapshot of the database (so that writers committing meanwhile can never make
/// a consistent ledger look broken: entries, heads, counters and reservations are of one
/// instant).
pub async fn verify(store: &Store) -> Result<VerifyReport, BudgetError> {
    let mut snapshot = store.db().begin_snapshot().await?;
    let report = verify_in(&mut snapshot).await?;
    snapshot.rollback().await.map_err(DbError::from)?;
    Ok(report)
}

async fn verify_in(snapshot: &mut Tx) -> Result<VerifyReport, BudgetError> {
    let mut report = VerifyReport::default();
    // The same replay as the offline `subsidyctl ledger verify --file`: hashes, chains, and
    // the balances and reservations' lives as the entries tell them.
    let mut replay = Replay::default();
    let mut after = 0;
    loop {
        let entries = ledger::list_page(&mut **snapshot, "", after, VERIFY_BATCH_ENTRIES).await?;
        for stored in &entries {
            after = stored.entry_id;
            report.entries_checked += 1;
            if let Err(problem) = replay.push(&stored.entry, &stored.entry_hash) {
                report.first_problem = Some((problem.pool_id, problem.sequence, problem.what));
                return Ok(report);
            }
        }
        if (entries.len() as i64) < VERIFY_BATCH_ENTRIES {
            break;
        }
    }
    for pool in pools::list(&mut **snapshot, "", i64::MAX).await? {
        let (held, committed) = reservations::sums(&mut **snapshot, &pool.pool_id).await?;
        let head = replay
            .pools()
            .get(&pool.pool_id)
            .map(|replayed| replayed.head.clone())
            .unwrap_or_default();
        let stored_head = pools::ledger_head(&mut **snapshot, &pool.pool_id).await?;
        let problem = if held != pool.held_fen || committed != pool.committed_fen {
            Some(format!(
                "pool counters held={} committed={} differ from reservations held={held} committed={committed}",
                pool.held_fen, pool.committed_fen
            ))
        } else if stored_head != (head.sequence, head.hash.clone()) {
            Some(
                "the pool's ledger head does not match its last entry (entries missing)".to_owned(),
            )
        } else {
            None
        };
        if let Some(problem) = problem {
            report.first_problem = Some((pool.pool_id.clone(), head.sequence, problem));
            return Ok(report);
        }
    }
    Ok(report)
}
