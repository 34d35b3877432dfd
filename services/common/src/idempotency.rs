//! Idempotency by `request_id`, inside the caller's write transaction.
//!
//! The key is claimed first with `INSERT … ON CONFLICT DO NOTHING` on the unique
//! `request_id`, in the same transaction as the effect. If the transaction commits, the key and
//! the response are stored together; if it rolls back (invalid input, a refused operation, a
//! broken connection) nothing is stored and a retry is evaluated afresh. A concurrent duplicate
//! blocks on the key until the first commits, then sees its stored response.
//!
//! Every service's schema has the table:
//! `idempotency_keys(request_id TEXT PRIMARY KEY, operation TEXT, fingerprint TEXT,
//! response BYTEA/BLOB, created_us BIGINT)`.

use prost::Message;
use sha2::{Digest, Sha256};
use sqlx::{Any, Row, Transaction};

use crate::db::DbError;

/// The key a request is kept under: its request id, a space, and the scope of the caller that
/// sent it (`user:r.wang`, `service:application`). Two callers using one request id never
/// meet, one caller cannot replay another's request, and the request id is the key's first
/// word (request ids hold no spaces).
pub fn scoped(scope: &str, request_id: &str) -> String {
    format!("{request_id} {scope}")
}

/// The request id of a key made by [`scoped`].
pub fn request_id_of(key: &str) -> &str {
    key.split(' ').next().unwrap_or(key)
}

/// The outcome of claiming a key.
#[derive(Debug)]
pub enum Claim<R> {
    /// The key is new; do the work and call [`store_response`] before committing.
    Fresh,
    /// The same request was done before; here is its response.
    Replay(R),
    /// The key was used for a different request.
    Reused,
}

/// A stable fingerprint of an operation and its request message.
pub fn fingerprint<M: Message>(operation: &str, request: &M) -> String {
    let mut hasher = Sha256::new();
    hasher.update(operation.as_bytes());
    hasher.update([0]);
    hasher.update(request.encode_to_vec());
    hex::encode(hasher.finalize())
}

/// Claims `key` (a request id, scoped to its caller: see `auth::Caller::idempotency_key`) for
/// `operation` with `fingerprint` in `tx`.
pub async fn claim<R: Message + Default>(
    tx: &mut Transaction<'static, Any>,
    key: &str,
    operation: &str,
    fingerprint: &str,
    now_us_sql: &str,
) -> Result<Claim<R>, DbError> {
    if insert(tx, (key, operation, fingerprint), now_us_sql, None).await? {
        return Ok(Claim::Fresh);
    }
    stored(tx, key, operation, fingerprint).await
}

/// Stores `key` for `operation` with `fingerprint` together with its `response` in `tx`, in
/// one statement, for a request whose effect `tx` already holds: [`Claim::Fresh`] means the
/// key and response are stored (commit); otherwise the key was stored before (or by a
/// concurrent duplicate, which this waits for) and the answer is the stored response, or
/// [`Claim::Reused`] for another request (roll back).
pub async fn claim_with_response<R: Message + Default>(
    tx: &mut Transaction<'static, Any>,
    key: &str,
    operation: &str,
    fingerprint: &str,
    now_us_sql: &str,
    response: &R,
) -> Result<Claim<R>, DbError> {
    let encoded = response.encode_to_vec();
    if insert(tx, (key, operation, fingerprint), now_us_sql, Some(encoded)).await? {
        return Ok(Claim::Fresh);
    }
    stored(tx, key, operation, fingerprint).await
}

/// Inserts the key (key, operation, fingerprint) with `response` (none yet: NULL) unless it
/// is stored; whether it was inserted.
async fn insert(
    tx: &mut Transaction<'static, Any>,
    (key, operation, fingerprint): (&str, &str, &str),
    now_us_sql: &str,
    response: Option<Vec<u8>>,
) -> Result<bool, DbError> {
    let insert = format!(
        "INSERT INTO idempotency_keys (request_id, operation, fingerprint, response, created_us) \
         VALUES ($1, $2, $3, $4, {now_us_sql}) ON CONFLICT (request_id) DO NOTHING"
    );
    let inserted = sqlx::query(sqlx::AssertSqlSafe(insert))
        .bind(key)
        .bind(operation)
        .bind(fingerprint)
        .bind(response)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    Ok(inserted == 1)
}

/// What `key`, stored and committed, holds for `operation` with `fingerprint`.
async fn stored<R: Message + Default>(
    tx: &mut Transaction<'static, Any>,
    key: &str,
    operation: &str,
    fingerprint: &str,
) -> Result<Claim<R>, DbError> {
    let row = sqlx::query(
        "SELECT operation, fingerprint, response FROM idempotency_keys WHERE request_id = $1",
    )
    .bind(key)
    .fetch_one(&mut **tx)
    .await?;
    let stored_operation: String = row.try_get("operation")?;
    let stored_fingerprint: String = row.try_get("fingerprint")?;
    if stored_operation != operation || stored_fingerprint != fingerprint {
        return Ok(Claim::Reused);
    }
    let response: Option<Vec<u8>> = row.try_get("response")?;
    let bytes = response.expect("a committed idempotency key always has its response");
    let decoded = R::decode(bytes.as_slice())
        .map_err(|e| DbError::Other(sqlx::Error::Decode(Box::new(e))))?;
    Ok(Claim::Replay(decoded))
}

/// Stores the response of a fresh request, in the same transaction as its effect.
pub async fn store_response<R: Message>(
    tx: &mut Transaction<'static, Any>,
    key: &str,
    response: &R,
) -> Result<(), DbError> {
    sqlx::query("UPDATE idempotency_keys SET response = $2 WHERE request_id = $1")
        .bind(key)
        .bind(response.encode_to_vec())
        .execute(&mut **tx)
        .await?;
    Ok(())
}
