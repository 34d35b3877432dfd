//! The `idempotency_keys` table, many keys at a time: the protocol of
//! `subsidy_common::idempotency` (claim the key in the effect's transaction, store the
//! response with the effect, replay it) for a whole batch.
//!
//! Keys are claimed in sorted order so that two batches that wait on each other's keys always
//! wait in the same order (no deadlock); a key another transaction is inserting makes the
//! claim wait until that transaction ends, so a concurrent duplicate sees the first one's
//! stored response instead of acting twice.

use std::collections::HashSet;

use sqlx::Row;
use subsidy_common::db::DbError;

use super::{Kind, Store, Tx, bind_padding, list, padded, padded_in, padded_insert, placeholders};

/// A key to claim: the request id (scoped to the caller), the operation and the request's
/// fingerprint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    /// The key as stored: the caller's scope and its request id, so two callers using the same
    /// request id never meet.
    pub request_id: String,
    /// The request id as the caller sent it (for error details).
    pub shown: String,
    /// The operation, e.g. `Reserve`.
    pub operation: &'static str,
    /// The fingerprint of the request.
    pub fingerprint: String,
}

/// A key that was stored before, with what it was stored for.
#[derive(Clone, Debug)]
pub struct StoredKey {
    /// The request id.
    pub request_id: String,
    /// The operation.
    pub operation: String,
    /// The fingerprint.
    pub fingerprint: String,
    /// The stored response (encoded); `None` only for a key claimed by a transaction that is
    /// still open, which a committed reader never sees.
    pub response: Option<Vec<u8>>,
}

/// Claims `keys` (distinct request ids); returns the ids that were new.
pub async fn claim(store: &Store, tx: &mut Tx, keys: &[&Key]) -> Result<HashSet<String>, DbError> {
    if keys.is_empty() {
        return Ok(HashSet::new());
    }
    let mut sorted: Vec<&&Key> = keys.iter().collect();
    sorted.sort_by(|a, b| a.request_id.cmp(&b.request_id));
    let sql = padded_insert(
        "INSERT INTO idempotency_keys (request_id, operation, fingerprint, response, created_us)",
        &format!("v.column1, v.column2, v.column3, NULL, {}", store.now_sql()),
        sorted.len(),
        &KEY_KINDS,
        "ON CONFLICT (request_id) DO NOTHING RETURNING request_id",
    );
    let mut query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
    for key in &sorted {
        query = query
            .bind(key.request_id.clone())
            .bind(key.operation)
            .bind(key.fingerprint.clone());
    }
    for _ in sorted.len()..padded(sorted.len()) {
        query = query
            .bind(None::<String>)
            .bind(None::<String>)
            .bind(None::<String>);
    }
    Ok(query.fetch_all(&mut **tx).await?.into_iter().collect())
}

/// The value kinds of a claimed key's row.
const KEY_KINDS: [Kind; 3] = [Kind::Text, Kind::Text, Kind::Text];

/// The stored keys among `request_ids`.
pub async fn stored(tx: &mut Tx, request_ids: &[&str]) -> Result<Vec<StoredKey>, DbError> {
    if request_ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids = padded_in(request_ids);
    let sql = format!(
        "SELECT request_id, operation, fingerprint, response FROM idempotency_keys \
         WHERE request_id IN ({})",
        list(ids.len(), 1)
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for id in ids {
        query = query.bind(id);
    }
    let mut keys = Vec::new();
    for row in query.fetch_all(&mut **tx).await? {
        keys.push(StoredKey {
            request_id: row.try_get("request_id")?,
            operation: row.try_get("operation")?,
            fingerprint: row.try_get("fingerprint")?,
            response: row.try_get("response")?,
        });
    }
    Ok(keys)
}

/// Stores the responses of claimed keys. One statement (padding rows match no key).
pub async fn store_responses(tx: &mut Tx, responses: &[(&str, &[u8])]) -> Result<(), DbError> {
    if responses.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "WITH v (request_id, response) AS (VALUES {}) \
         UPDATE idempotency_keys SET response = v.response FROM v \
         WHERE idempotency_keys.request_id = v.request_id",
        placeholders(padded(responses.len()), 2, 1)
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (id, response) in responses {
        query = query.bind(id.to_string()).bind(response.to_vec());
    }
    let query = bind_padding(query, &[Kind::Text, Kind::Bytes], responses.len());
    let updated = query.execute(&mut **tx).await?.rows_affected();
    assert_eq!(
        updated as usize,
        responses.len(),
        "every response belongs to a key claimed in this transaction"
    );
    Ok(())
}

/// Gives up claimed keys whose request was refused: a refusal stores nothing, so a retry is
/// evaluated afresh.
pub async fn release(tx: &mut Tx, request_ids: &[&str]) -> Result<(), DbError> {
    if request_ids.is_empty() {
        return Ok(());
    }
    let ids = padded_in(request_ids);
    let sql = format!(
        "DELETE FROM idempotency_keys WHERE request_id IN ({})",
        list(ids.len(), 1)
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for id in ids {
        query = query.bind(id);
    }
    query.execute(&mut **tx).await?;
    Ok(())
}

/// Stores a key with its response unless the key exists; returns the stored response of the
/// key (the one just stored, or the earlier one) with its operation and fingerprint, and
/// whether this call stored it.
pub async fn store_once(
    store: &Store,
    tx: &mut Tx,
    key: &Key,
    response: &[u8],
) -> Result<(StoredKey, bool), DbError> {
    let inserted = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO idempotency_keys (request_id, operation, fingerprint, response, created_us) \
         VALUES ($1, $2, $3, $4, {}) ON CONFLICT (request_id) DO NOTHING",
        store.now_sql()
    )))
    .bind(&key.request_id)
    .bind(key.operation)
    .bind(&key.fingerprint)
    .bind(response.to_vec())
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    let stored = stored(tx, &[key.request_id.as_str()]).await?;
    let stored = stored
        .into_iter()
        .next()
        .expect("the key was stored or existed");
    Ok((stored, inserted))
}

/// Holds a transaction-scoped advisory lock on `request_id` until `tx` ends (PostgreSQL only):
/// a second holder of the same request id waits for the first to finish.
pub async fn lock_request(tx: &mut Tx, request_id: &str) -> Result<(), DbError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(request_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A stored key by id, outside a transaction.
pub async fn find(store: &Store, request_id: &str) -> Result<Option<StoredKey>, DbError> {
    let row = sqlx::query(
        "SELECT request_id, operation, fingerprint, response FROM idempotency_keys WHERE request_id = $1",
    )
    .bind(request_id)
    .fetch_optional(&store.db().pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(StoredKey {
        request_id: row.try_get("request_id")?,
        operation: row.try_get("operation")?,
        fingerprint: row.try_get("fingerprint")?,
        response: row.try_get("response")?,
    }))
}
