//! The request log: `idempotency_keys` (requests done, with their stored responses, through the
//! shared `idempotency` protocol) and `request_progress` (every request started, with its
//! operation and fingerprint; for a multi-step request also the claim, proposal or round it
//! works on, so that a retry or the reconciler finishes it). A request's key is entered in
//! `request_progress` first in its transaction, so a concurrent duplicate of any request
//! waits for the first there and then follows it.

use sqlx::{AnyConnection, Row};
use subsidy_common::db::DbError;
use subsidy_common::idempotency::{self, Claim};

use super::{Store, Tx};

/// The state of a request id, as far as this service knows it.
#[derive(Debug)]
pub enum RequestStatus<R> {
    /// Never seen.
    New,
    /// Done; here is the original response.
    Replay(R),
    /// Started and not finished; the work concerns this subject.
    InProgress(String),
    /// Used for a different request.
    Reused,
}

/// Whether a stored operation and fingerprint are those of the request asking.
fn same_request(
    row: &sqlx::any::AnyRow,
    operation: &str,
    fingerprint: &str,
) -> Result<bool, DbError> {
    let stored_operation: String = row.try_get("operation")?;
    let stored_fingerprint: String = row.try_get("fingerprint")?;
    Ok(stored_operation == operation && stored_fingerprint == fingerprint)
}

impl Store {
    /// What this service knows of the request `key` (a caller-scoped request id) for
    /// `operation` with `fingerprint`.
    pub async fn request_status<R: prost::Message + Default>(
        &self,
        conn: &mut AnyConnection,
        key: &str,
        operation: &str,
        fingerprint: &str,
    ) -> Result<RequestStatus<R>, DbError> {
        // Both tables in one statement: a finished request's key (with its response) and a
        // multi-step request's progress row (with its subject). A finished multi-step request
        // is in both; its response answers.
        let rows = sqlx::query(
            "SELECT CAST(1 AS BIGINT) AS done, operation, fingerprint, response, NULL AS subject_id \
             FROM idempotency_keys WHERE request_id = $1 \
             UNION ALL SELECT CAST(0 AS BIGINT) AS done, operation, fingerprint, NULL AS response, subject_id \
             FROM request_progress WHERE request_id = $1",
        )
        .bind(key)
        .fetch_all(&mut *conn)
        .await?;
        let done = rows
            .iter()
            .map(|row| row.try_get::<i64, _>("done").map(|done| (done, row)))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some((_, row)) = done.iter().find(|(done, _)| *done == 1) {
            if !same_request(row, operation, fingerprint)? {
                return Ok(RequestStatus::Reused);
            }
            let bytes: Option<Vec<u8>> = row.try_get("response")?;
            let bytes = bytes.expect("a committed idempotency key always has its response");
            let response = R::decode(bytes.as_slice())
                .map_err(|e| DbError::Other(sqlx::Error::Decode(Box::new(e))))?;
            return Ok(RequestStatus::Replay(response));
        }
        if let Some((_, row)) = done.first() {
            if !same_request(row, operation, fingerprint)? {
                return Ok(RequestStatus::Reused);
            }
            return Ok(RequestStatus::InProgress(row.try_get("subject_id")?));
        }
        Ok(RequestStatus::New)
    }

    /// Records that `request_id` started work on `subject_id` (in the transaction that starts
    /// it). Returns when it was recorded (µs by the database clock), or `None` when the id was
    /// recorded already.
    pub async fn record_progress(
        &self,
        tx: &mut Tx,
        key: &str,
        operation: &str,
        fingerprint: &str,
        subject_id: &str,
    ) -> Result<Option<i64>, DbError> {
        Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "INSERT INTO request_progress (request_id, operation, fingerprint, subject_id, created_us) \
             VALUES ($1, $2, $3, $4, {}) ON CONFLICT (request_id) DO NOTHING RETURNING created_us",
            self.now
        )))
        .bind(key)
        .bind(operation)
        .bind(fingerprint)
        .bind(subject_id)
        .fetch_optional(&mut **tx)
        .await?)
    }

    /// The fingerprint of a request recorded in progress for `operation`, if it is.
    pub async fn progress_fingerprint(
        &self,
        tx: &mut Tx,
        request_id: &str,
        operation: &str,
    ) -> Result<Option<String>, DbError> {
        Ok(sqlx::query_scalar(
            "SELECT fingerprint FROM request_progress WHERE request_id = $1 AND operation = $2",
        )
        .bind(request_id)
        .bind(operation)
        .fetch_optional(&mut **tx)
        .await?)
    }

    /// The requests recorded in progress for `operation` on `subject_id`, in id order.
    pub async fn requests_in_progress(
        &self,
        tx: &mut Tx,
        operation: &str,
        subject_id: &str,
    ) -> Result<Vec<String>, DbError> {
        Ok(sqlx::query_scalar(
            "SELECT request_id FROM request_progress WHERE operation = $1 AND subject_id = $2 \
             ORDER BY request_id",
        )
        .bind(operation)
        .bind(subject_id)
        .fetch_all(&mut **tx)
        .await?)
    }

    /// Claims `request_id` in `tx` for a one-transaction request: [`Claim::Fresh`] means do
    /// the work and call [`Store::store_response`] before committing; a replay is returned as
    /// it is (the caller rolls back). A request recorded in progress under another operation
    /// or fingerprint is [`Claim::Reused`] too.
    ///
    /// The key is entered in `request_progress` first (with no subject), so that the two
    /// tables form one key space: a multi-step request and a one-transaction request that
    /// share a key in flight wait for each other there, and the later one is told
    /// `Reused`, instead of both taking effect.
    pub async fn start_request<R: prost::Message + Default>(
        &self,
        tx: &mut Tx,
        key: &str,
        operation: &str,
        fingerprint: &str,
    ) -> Result<Claim<R>, DbError> {
        if self
            .record_progress(tx, key, operation, fingerprint, "")
            .await?
            .is_none()
        {
            let started = sqlx::query(
                "SELECT operation, fingerprint FROM request_progress WHERE request_id = $1",
            )
            .bind(key)
            .fetch_one(&mut **tx)
            .await?;
            if !same_request(&started, operation, fingerprint)? {
                return Ok(Claim::Reused);
            }
        }
        idempotency::claim::<R>(tx, key, operation, fingerprint, &self.now).await
    }

    /// Stores `response` under `key` for a multi-step request recorded in progress for
    /// `operation` with `fingerprint` (the progress row already holds the key in the key space
    /// of [`Store::start_request`]): key and response in one statement. A response stored
    /// before, by a concurrent duplicate of the request, is returned as a replay instead.
    pub async fn store_recorded_response<R: prost::Message + Default>(
        &self,
        tx: &mut Tx,
        key: &str,
        operation: &str,
        fingerprint: &str,
        response: &R,
    ) -> Result<Claim<R>, DbError> {
        idempotency::claim_with_response(tx, key, operation, fingerprint, &self.now, response).await
    }

    /// Stores the response of a request claimed with [`Store::start_request`].
    pub async fn store_response<R: prost::Message>(
        &self,
        tx: &mut Tx,
        key: &str,
        response: &R,
    ) -> Result<(), DbError> {
        idempotency::store_response(tx, key, response).await
    }
}
