//! The `outbox` table: events appended in the transaction of the change they report, delivered
//! in order by the relay, marked delivered or dead-lettered.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use subsidy_common::db::DbError;

use super::{Store, Tx, flag};

/// Most events appended by one statement.
const EVENTS_PER_INSERT_MAX: usize = 256;

/// One outbox event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRow {
    /// Relay order.
    pub outbox_seq: i64,
    /// Event identifier.
    pub event_id: String,
    /// Encoded `subsidy.notification.v1.Event`.
    pub event: Vec<u8>,
    /// Attempts so far.
    pub attempt_count: i64,
}

fn outbox_row(row: &AnyRow) -> Result<OutboxRow, sqlx::Error> {
    Ok(OutboxRow {
        outbox_seq: row.try_get("outbox_seq")?,
        event_id: row.try_get("event_id")?,
        event: row.try_get("event")?,
        attempt_count: row.try_get("attempt_count")?,
    })
}

impl Store {
    /// Appends events (id, encoded event) to the outbox in their order, several to a
    /// statement.
    pub async fn append_events(
        &self,
        tx: &mut Tx,
        events: &[(String, Vec<u8>)],
        created_us: i64,
    ) -> Result<(), DbError> {
        for chunk in events.chunks(EVENTS_PER_INSERT_MAX) {
            let values = (0..chunk.len())
                .map(|row| format!("(${}, ${}, $1)", 2 * row + 2, 2 * row + 3))
                .collect::<Vec<_>>()
                .join(", ");
            let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO outbox (event_id, event, created_us) VALUES {values}"
            )))
            .bind(created_us);
            for (event_id, event) in chunk {
                query = query.bind(event_id.clone()).bind(event.clone());
            }
            query.execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// The oldest undelivered events, in order.
    pub async fn undelivered_events(
        &self,
        conn: &mut AnyConnection,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, DbError> {
        let rows = sqlx::query(
            "SELECT outbox_seq, event_id, event, attempt_count FROM outbox WHERE delivered_us IS NULL \
             ORDER BY outbox_seq LIMIT $1",
        )
        .bind(limit)
        .fetch_all(conn)
        .await?;
        Ok(rows.iter().map(outbox_row).collect::<Result<_, _>>()?)
    }

    /// Marks an event delivered (or dead-lettered, with the error that made it undeliverable).
    pub async fn mark_event_done(
        &self,
        conn: &mut AnyConnection,
        outbox_seq: i64,
        dead_letter_error: Option<&str>,
    ) -> Result<(), DbError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE outbox SET delivered_us = {}, attempt_count = attempt_count + 1, \
             dead_lettered = $2, last_error = $3 WHERE outbox_seq = $1",
            self.now
        )))
        .bind(outbox_seq)
        .bind(flag(dead_letter_error.is_some()))
        .bind(dead_letter_error.unwrap_or(""))
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Marks events delivered, in one statement (the relay publishes a batch, then records
    /// it: a crash in between publishes them again, which the notification service answers
    /// as duplicates).
    pub async fn mark_events_delivered(
        &self,
        conn: &mut AnyConnection,
        outbox_seqs: &[i64],
    ) -> Result<(), DbError> {
        if outbox_seqs.is_empty() {
            return Ok(());
        }
        let mut padded = outbox_seqs.to_vec();
        padded.resize(
            subsidy_common::db::padded(outbox_seqs.len()),
            outbox_seqs[0],
        );
        let list = (1..=padded.len())
            .map(|index| format!("${index}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE outbox SET delivered_us = {}, attempt_count = attempt_count + 1, \
             dead_lettered = 0, last_error = '' WHERE outbox_seq IN ({list})",
            self.now
        )));
        for seq in padded {
            query = query.bind(seq);
        }
        query.execute(conn).await?;
        Ok(())
    }

    /// Records a failed delivery attempt.
    pub async fn mark_event_failed(
        &self,
        conn: &mut AnyConnection,
        outbox_seq: i64,
        error: &str,
    ) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE outbox SET attempt_count = attempt_count + 1, last_error = $2 WHERE outbox_seq = $1",
        )
        .bind(outbox_seq)
        .bind(error)
        .execute(conn)
        .await?;
        Ok(())
    }
}
