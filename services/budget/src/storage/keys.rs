//! The `idempotency_keys` table, many keys at a time, for the pools' batches: a batch reads
//! which of its keys are stored (replays), decides under the pool's lock, and inserts the keys
//! of the jobs that succeeded together with their responses, so each key is written once.
//!
//! Keys are inserted in sorted order so that two batches that wait on each other's keys always
//! wait in the same order (no deadlock); a key another transaction is inserting makes the
//! insert wait until that transaction ends and then skip the key, which the batch notices
//! (fewer rows inserted than asked) and answers by deciding again, so a concurrent duplicate
//! gets the first one's stored response instead of acting twice.

use sqlx::Row;
use subsidy_common::db::DbError;

use super::{Kind, Store, Tx, bind_padding, list, padded_in, padded_insert};

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

/// Inserts the keys of the jobs of a batch that succeeded, each with its response, in one
/// statement (sorted by request id, so that two batches inserting common keys wait for each
/// other in one order); returns how many were inserted. A key that another transaction
/// stored (or is storing: the insert waits for it) is left as it is and not counted.
pub async fn insert_with_responses(
    store: &Store,
    tx: &mut Tx,
    rows: &[(&Key, &[u8])],
) -> Result<usize, DbError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut sorted: Vec<&(&Key, &[u8])> = rows.iter().collect();
    sorted.sort_by(|a, b| a.0.request_id.cmp(&b.0.request_id));
    let sql = padded_insert(
        "INSERT INTO idempotency_keys (request_id, operation, fingerprint, response, created_us)",
        &format!(
            "v.column1, v.column2, v.column3, v.column4, {}",
            store.now_sql()
        ),
        sorted.len(),
        &KEY_KINDS,
        "ON CONFLICT (request_id) DO NOTHING",
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (key, response) in &sorted {
        query = query
            .bind(key.request_id.clone())
            .bind(key.operation)
            .bind(key.fingerprint.clone())
            .bind(response.to_vec());
    }
    let query = bind_padding(query, &KEY_KINDS, sorted.len());
    let inserted = query.execute(&mut **tx).await?.rows_affected();
    Ok(usize::try_from(inserted).expect("a count of rows fits"))
}

/// The value kinds of a stored key's row.
const KEY_KINDS: [Kind; 4] = [Kind::Text, Kind::Text, Kind::Text, Kind::Bytes];

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
