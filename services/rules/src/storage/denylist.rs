//! The `denylist_entries` table and the denylist's identity in `rules_state`.

use std::collections::HashSet;

use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};
use subsidy_common::Uscc;
use subsidy_common::db::DbError;

use super::{Tx, day, decode_error};
use crate::domain::denylist::DenylistEntry;

/// Rows of one multi-row denylist insert (4 parameters each, far below SQLite's limit).
const INSERT_BATCH_ROWS: usize = 250;

/// The denylist's identity: its hash and when it was put in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DenylistState {
    /// The SHA-256 of the canonical list.
    pub content_sha256: String,
    /// When it was put in place, µs; `None` if it never was.
    pub replaced_us: Option<i64>,
}

fn entry(row: &AnyRow) -> Result<DenylistEntry, DbError> {
    let code: String = row.try_get("uscc")?;
    let listed: Option<String> = row.try_get("listed_date")?;
    Ok(DenylistEntry {
        uscc: Uscc::parse(&code).map_err(|_| decode_error(format!("bad USCC {code}")))?,
        reason: row.try_get("reason")?,
        source: row.try_get("source")?,
        listed_date: listed.as_deref().map(day).transpose()?,
    })
}

/// The whole denylist.
pub async fn all(pool: &AnyPool) -> Result<Vec<DenylistEntry>, DbError> {
    let rows =
        sqlx::query("SELECT uscc, reason, source, listed_date FROM denylist_entries ORDER BY uscc")
            .fetch_all(pool)
            .await?;
    rows.iter().map(entry).collect()
}

/// Up to `limit` entries after `after` in USCC order, optionally only `only` (empty: all),
/// with the list's state.
pub async fn page(
    pool: &AnyPool,
    only: &str,
    after: &str,
    limit: i64,
) -> Result<(Vec<DenylistEntry>, DenylistState), DbError> {
    let state = sqlx::query(
        "SELECT denylist_sha256, denylist_replaced_us FROM rules_state WHERE singleton = 1",
    )
    .fetch_one(pool)
    .await?;
    let rows = sqlx::query(
        "SELECT uscc, reason, source, listed_date FROM denylist_entries \
         WHERE uscc > $1 AND ($2 = '' OR uscc = $2) ORDER BY uscc LIMIT $3",
    )
    .bind(after)
    .bind(only)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let entries = rows.iter().map(entry).collect::<Result<_, _>>()?;
    Ok((
        entries,
        DenylistState {
            content_sha256: state.try_get("denylist_sha256")?,
            replaced_us: state.try_get("denylist_replaced_us")?,
        },
    ))
}

/// Takes the `rules_state` row for a replacement: records the new list's hash, moves the
/// denylist generation and returns the database's time of the replacement, µs.
pub async fn mark_replaced(
    tx: &mut Tx,
    content_sha256: &str,
    now_us_sql: &str,
) -> Result<i64, DbError> {
    let state = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE rules_state SET denylist_generation = denylist_generation + 1, \
         denylist_sha256 = $1, denylist_replaced_us = {now_us_sql} WHERE singleton = 1 \
         RETURNING denylist_replaced_us"
    )))
    .bind(content_sha256)
    .fetch_one(&mut **tx)
    .await?;
    Ok(state.try_get("denylist_replaced_us")?)
}

/// The codes listed now (as `tx` sees them).
pub async fn codes(tx: &mut Tx) -> Result<HashSet<String>, DbError> {
    Ok(sqlx::query_scalar("SELECT uscc FROM denylist_entries")
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .collect())
}

/// Replaces every entry with `entries` (codes unique).
pub async fn replace_entries(tx: &mut Tx, entries: &[DenylistEntry]) -> Result<(), DbError> {
    sqlx::query("DELETE FROM denylist_entries")
        .execute(&mut **tx)
        .await?;
    for batch in entries.chunks(INSERT_BATCH_ROWS) {
        let values: Vec<String> = (0..batch.len())
            .map(|i| {
                let n = i * 4;
                format!("(${}, ${}, ${}, ${})", n + 1, n + 2, n + 3, n + 4)
            })
            .collect();
        let sql = format!(
            "INSERT INTO denylist_entries (uscc, reason, source, listed_date) VALUES {}",
            values.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for entry in batch {
            query = query
                .bind(entry.uscc.as_str().to_owned())
                .bind(entry.reason.clone())
                .bind(entry.source.clone())
                .bind(entry.listed_date.map(|d| d.to_string()));
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}
