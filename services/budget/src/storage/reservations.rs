//! The `reservations` table.

use sqlx::Row;
use sqlx::any::AnyRow;
use subsidy_common::db::DbError;

use super::{Kind, Store, Tx, bind_padding, list, padded_in, padded_insert};
use crate::domain::{Reservation, ReservationFilter, ReservationState};

const COLUMNS: &str = "reservation_id, pool_id, beneficiary_uscc, reference, state, held_fen, \
     committed_fen, released_fen, created_us, expires_us, settled_us, release_reason, \
     revoked_fen, revoked_us, revoke_reason";
/// The kinds of the columns, in order.
const KINDS: [Kind; 15] = [
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Int,
    Kind::Int,
    Kind::Int,
    Kind::Int,
    Kind::Int,
    Kind::Int,
    Kind::Text,
    Kind::Int,
    Kind::Int,
    Kind::Text,
];

fn reservation(row: &AnyRow) -> Result<Reservation, DbError> {
    let state: String = row.try_get("state")?;
    let state = ReservationState::parse(&state).ok_or_else(|| {
        DbError::Other(sqlx::Error::Decode(
            format!("unknown reservation state {state}").into(),
        ))
    })?;
    Ok(Reservation {
        reservation_id: row.try_get("reservation_id")?,
        pool_id: row.try_get("pool_id")?,
        beneficiary_uscc: row.try_get("beneficiary_uscc")?,
        reference: row.try_get("reference")?,
        state,
        held_fen: row.try_get("held_fen")?,
        committed_fen: row.try_get("committed_fen")?,
        released_fen: row.try_get("released_fen")?,
        created_us: row.try_get("created_us")?,
        expires_us: row.try_get("expires_us")?,
        settled_us: row.try_get("settled_us")?,
        release_reason: row.try_get("release_reason")?,
        revoked_fen: row.try_get("revoked_fen")?,
        revoked_us: row.try_get("revoked_us")?,
        revoke_reason: row.try_get("revoke_reason")?,
    })
}

/// The reservations with these ids (those that exist).
pub async fn by_ids(tx: &mut Tx, ids: &[&str]) -> Result<Vec<Reservation>, DbError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids = padded_in(ids);
    let sql = format!(
        "SELECT {COLUMNS} FROM reservations WHERE reservation_id IN ({})",
        list(ids.len(), 1)
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for id in ids {
        query = query.bind(id);
    }
    query
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(reservation)
        .collect()
}

/// Up to `limit` held reservations of a pool due by `now_us`, earliest expiry first.
pub async fn due(
    tx: &mut Tx,
    pool_id: &str,
    now_us: i64,
    limit: i64,
) -> Result<Vec<Reservation>, DbError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM reservations WHERE pool_id = $1 AND state = 'HELD' \
         AND expires_us <= $2 ORDER BY expires_us, reservation_id LIMIT $3"
    )))
    .bind(pool_id)
    .bind(now_us)
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter().map(reservation).collect()
}

/// Writes reservations as they now are: new ones are inserted, existing ones (that left HELD,
/// were extended or revoked) get their new state, amounts, expiry, settlement, revocation and
/// reasons. One statement.
pub async fn upsert(tx: &mut Tx, rows: &[&Reservation]) -> Result<(), DbError> {
    if rows.is_empty() {
        return Ok(());
    }
    let sql = padded_insert(
        &format!("INSERT INTO reservations ({COLUMNS})"),
        "*",
        rows.len(),
        &KINDS,
        "ON CONFLICT (reservation_id) DO UPDATE SET state = excluded.state, \
         committed_fen = excluded.committed_fen, released_fen = excluded.released_fen, \
         expires_us = excluded.expires_us, settled_us = excluded.settled_us, \
         release_reason = excluded.release_reason, revoked_fen = excluded.revoked_fen, \
         revoked_us = excluded.revoked_us, revoke_reason = excluded.revoke_reason",
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for row in rows {
        query = query
            .bind(row.reservation_id.clone())
            .bind(row.pool_id.clone())
            .bind(row.beneficiary_uscc.clone())
            .bind(row.reference.clone())
            .bind(row.state.as_str())
            .bind(row.held_fen)
            .bind(row.committed_fen)
            .bind(row.released_fen)
            .bind(row.created_us)
            .bind(row.expires_us)
            .bind(row.settled_us)
            .bind(row.release_reason.clone())
            .bind(row.revoked_fen)
            .bind(row.revoked_us)
            .bind(row.revoke_reason.clone());
    }
    bind_padding(query, &KINDS, rows.len())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The pool a reservation belongs to, if it exists.
pub async fn pool_of(store: &Store, reservation_id: &str) -> Result<Option<String>, DbError> {
    Ok(
        sqlx::query_scalar("SELECT pool_id FROM reservations WHERE reservation_id = $1")
            .bind(reservation_id)
            .fetch_optional(&store.db().pool)
            .await?,
    )
}

/// The pools that have held reservations due by the store's clock.
pub async fn pools_with_due_holds(store: &Store) -> Result<Vec<String>, DbError> {
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT DISTINCT pool_id FROM reservations WHERE state = 'HELD' AND expires_us <= {} \
         ORDER BY pool_id",
        store.now_sql()
    )))
    .fetch_all(&store.db().pool)
    .await?)
}

/// One reservation.
pub async fn get(store: &Store, reservation_id: &str) -> Result<Option<Reservation>, DbError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM reservations WHERE reservation_id = $1"
    )))
    .bind(reservation_id)
    .fetch_optional(&store.db().pool)
    .await?;
    row.as_ref().map(reservation).transpose()
}

/// Reservations of a pool, newest first, after the keyset position `(created_us, id)`.
pub async fn list_page(
    store: &Store,
    filter: &ReservationFilter,
    after: Option<(i64, String)>,
    limit: i64,
) -> Result<Vec<Reservation>, DbError> {
    let has_after = i64::from(after.is_some());
    let (after_us, after_id) = after.unwrap_or((0, String::new()));
    let tenants = match &filter.beneficiaries {
        None => String::new(),
        Some(own) if own.is_empty() => " AND 1 = 0".to_owned(),
        Some(own) => format!(" AND beneficiary_uscc IN ({})", super::list(own.len(), 9)),
    };
    let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM reservations WHERE pool_id = $1 \
         AND ($2 = '' OR beneficiary_uscc = $2) AND ($3 = '' OR reference = $3) AND ($4 = '' OR state = $4) \
         AND ($5 = 0 OR created_us < $6 OR (created_us = $6 AND reservation_id < $7)){tenants} \
         ORDER BY created_us DESC, reservation_id DESC LIMIT $8"
    )))
    .bind(&filter.pool_id)
    .bind(&filter.beneficiary_uscc)
    .bind(&filter.reference)
    .bind(filter.state.map(ReservationState::as_str).unwrap_or(""))
    .bind(has_after)
    .bind(after_us)
    .bind(after_id)
    .bind(limit);
    for uscc in filter.beneficiaries.iter().flatten() {
        query = query.bind(uscc.clone());
    }
    let rows = query.fetch_all(&store.db().pool).await?;
    rows.iter().map(reservation).collect()
}

/// The sums over a pool's reservations: `(held, committed)`, fen.
pub async fn sums<'c>(
    db: impl sqlx::Executor<'c, Database = sqlx::Any>,
    pool_id: &str,
) -> Result<(i64, i64), DbError> {
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(CASE WHEN state = 'HELD' THEN held_fen ELSE 0 END), 0) AS BIGINT) AS held, \
         CAST(COALESCE(SUM(committed_fen), 0) AS BIGINT) AS committed FROM reservations WHERE pool_id = $1",
    )
    .bind(pool_id)
    .fetch_one(db)
    .await?;
    Ok((row.try_get("held")?, row.try_get("committed")?))
}
