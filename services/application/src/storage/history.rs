//! The `history` table: every transition of a claim or proposal, appended in the transaction
//! that makes it (the database refuses to change an entry).

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use subsidy_common::db::DbError;

use super::{Store, Tx};

/// Most history entries appended by one statement.
const ENTRIES_PER_INSERT_MAX: usize = 256;

/// One history entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryRow {
    /// Claim or proposal.
    pub application_id: String,
    /// Position from 1.
    pub sequence: i64,
    /// State before; `None` for the creating entry.
    pub from_state: Option<String>,
    /// State after.
    pub to_state: String,
    /// Who.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// Which request, or empty.
    pub request_id: String,
    /// When, µs.
    pub created_us: i64,
}

fn history_row(row: &AnyRow) -> Result<HistoryRow, sqlx::Error> {
    Ok(HistoryRow {
        application_id: row.try_get("application_id")?,
        sequence: row.try_get("sequence")?,
        from_state: row.try_get("from_state")?,
        to_state: row.try_get("to_state")?,
        actor: row.try_get("actor")?,
        reason: row.try_get("reason")?,
        request_id: row.try_get("request_id")?,
        created_us: row.try_get("created_us")?,
    })
}

impl Store {
    /// Appends a history entry.
    pub async fn append_history(&self, tx: &mut Tx, entry: &HistoryRow) -> Result<(), DbError> {
        self.append_histories(tx, std::slice::from_ref(entry)).await
    }

    /// Appends history entries, several to a statement.
    pub async fn append_histories(
        &self,
        tx: &mut Tx,
        entries: &[HistoryRow],
    ) -> Result<(), DbError> {
        for chunk in entries.chunks(ENTRIES_PER_INSERT_MAX) {
            let values = (0..chunk.len())
                .map(|row| {
                    let first = row * 8;
                    format!(
                        "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                        first + 1,
                        first + 2,
                        first + 3,
                        first + 4,
                        first + 5,
                        first + 6,
                        first + 7,
                        first + 8
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO history (application_id, sequence, from_state, to_state, actor, reason, \
                 request_id, created_us) VALUES {values}"
            )));
            for entry in chunk {
                query = query
                    .bind(entry.application_id.clone())
                    .bind(entry.sequence)
                    .bind(entry.from_state.clone())
                    .bind(entry.to_state.clone())
                    .bind(entry.actor.clone())
                    .bind(entry.reason.clone())
                    .bind(entry.request_id.clone())
                    .bind(entry.created_us);
            }
            query.execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// History entries of an application after `after_sequence`, in order.
    pub async fn history(
        &self,
        conn: &mut AnyConnection,
        application_id: &str,
        after_sequence: i64,
        limit: i64,
    ) -> Result<Vec<HistoryRow>, DbError> {
        let rows = sqlx::query(
            "SELECT application_id, sequence, from_state, to_state, actor, reason, request_id, created_us \
             FROM history WHERE application_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3",
        )
        .bind(application_id)
        .bind(after_sequence)
        .bind(limit)
        .fetch_all(conn)
        .await?;
        Ok(rows.iter().map(history_row).collect::<Result<_, _>>()?)
    }
}
