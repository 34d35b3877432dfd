//! The registry's tables: `providers` (current status), `provider_data_centers` and the
//! append-only `provider_status_changes`.

use chrono::NaiveDate;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};
use subsidy_common::Uscc;
use subsidy_common::db::DbError;

use super::{Tx, day, decode_error};
use crate::domain::registry::{
    Capacity, DataCenter, DataCenterStatus, DivisionCode, HISTORY_SHOWN_MAX, Provider,
    ProviderStatus, Registration, StatusChange, StatusUpdate,
};

fn status(text: &str) -> Result<ProviderStatus, DbError> {
    ProviderStatus::parse(text).ok_or_else(|| decode_error(format!("bad provider status {text}")))
}

fn provider_row(row: &AnyRow) -> Result<Provider, DbError> {
    let code: String = row.try_get("uscc")?;
    let effective: String = row.try_get("effective_date")?;
    let status_text: String = row.try_get("status")?;
    Ok(Provider {
        uscc: Uscc::parse(&code).map_err(|_| decode_error(format!("bad USCC {code}")))?,
        name: row.try_get("name")?,
        status: status(&status_text)?,
        effective_date: day(&effective)?,
        reason: row.try_get("reason")?,
        data_centers: Vec::new(),
        registered_us: row.try_get("registered_us")?,
        updated_us: row.try_get("updated_us")?,
    })
}

fn data_center_row(row: &AnyRow) -> Result<(String, DataCenter), DbError> {
    let code: String = row.try_get("division_code")?;
    let capacity: String = row.try_get("capacity_pflops")?;
    let state: String = row.try_get("status")?;
    Ok((
        row.try_get("uscc")?,
        DataCenter {
            name: row.try_get("name")?,
            division_code: DivisionCode::parse(&code)
                .ok_or_else(|| decode_error(format!("bad division code {code}")))?,
            capacity: Capacity::parse(&capacity)
                .ok_or_else(|| decode_error(format!("bad capacity {capacity}")))?,
            status: DataCenterStatus::parse(&state)
                .ok_or_else(|| decode_error(format!("bad data center status {state}")))?,
        },
    ))
}

const PROVIDER_COLUMNS: &str =
    "uscc, name, status, effective_date, reason, registered_us, updated_us";

/// Fills in the data centers of `providers` (one query).
async fn with_data_centers(
    pool: &AnyPool,
    mut providers: Vec<Provider>,
) -> Result<Vec<Provider>, DbError> {
    let (Some(first), Some(last)) = (providers.first(), providers.last()) else {
        return Ok(providers);
    };
    let rows = sqlx::query(
        "SELECT uscc, name, division_code, capacity_pflops, status FROM provider_data_centers \
         WHERE uscc >= $1 AND uscc <= $2 ORDER BY uscc, position",
    )
    .bind(first.uscc.as_str().to_owned())
    .bind(last.uscc.as_str().to_owned())
    .fetch_all(pool)
    .await?;
    for row in &rows {
        let (code, center) = data_center_row(row)?;
        if let Some(provider) = providers.iter_mut().find(|p| p.uscc.as_str() == code) {
            provider.data_centers.push(center);
        }
    }
    Ok(providers)
}

/// The provider `uscc` with its data centers, if registered.
pub async fn get(pool: &AnyPool, uscc: &Uscc) -> Result<Option<Provider>, DbError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {PROVIDER_COLUMNS} FROM providers WHERE uscc = $1"
    )))
    .bind(uscc.as_str().to_owned())
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(with_data_centers(pool, vec![provider_row(&row)?])
        .await?
        .pop())
}

/// Up to `limit` providers after the code `after`, of current status `only` (empty: all).
pub async fn page(
    pool: &AnyPool,
    only: Option<ProviderStatus>,
    after: &str,
    limit: i64,
) -> Result<Vec<Provider>, DbError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {PROVIDER_COLUMNS} FROM providers \
         WHERE uscc > $1 AND ($2 = '' OR status = $2) ORDER BY uscc LIMIT $3"
    )))
    .bind(after.to_owned())
    .bind(only.map(ProviderStatus::as_str).unwrap_or_default())
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let providers = rows.iter().map(provider_row).collect::<Result<_, _>>()?;
    with_data_centers(pool, providers).await
}

/// The latest [`HISTORY_SHOWN_MAX`] status changes of `uscc`, oldest first.
pub async fn history(pool: &AnyPool, uscc: &Uscc) -> Result<Vec<StatusChange>, DbError> {
    let rows = sqlx::query(
        "SELECT sequence, status, effective_date, reason, actor, recorded_us \
         FROM provider_status_changes WHERE uscc = $1 ORDER BY sequence DESC LIMIT $2",
    )
    .bind(uscc.as_str().to_owned())
    .bind(HISTORY_SHOWN_MAX)
    .fetch_all(pool)
    .await?;
    let mut changes = rows
        .iter()
        .map(|row| {
            let status_text: String = row.try_get("status")?;
            let effective: String = row.try_get("effective_date")?;
            Ok(StatusChange {
                sequence: row.try_get("sequence")?,
                status: status(&status_text)?,
                effective_date: day(&effective)?,
                reason: row.try_get("reason")?,
                actor: row.try_get("actor")?,
                recorded_us: row.try_get("recorded_us")?,
            })
        })
        .collect::<Result<Vec<_>, DbError>>()?;
    changes.reverse();
    Ok(changes)
}

/// Every status change of `uscc` as (sequence, status, effective day), for the status on a day.
pub async fn changes(
    pool: &AnyPool,
    uscc: &Uscc,
) -> Result<Vec<(i64, ProviderStatus, NaiveDate)>, DbError> {
    let rows = sqlx::query(
        "SELECT sequence, status, effective_date FROM provider_status_changes WHERE uscc = $1",
    )
    .bind(uscc.as_str().to_owned())
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let status_text: String = row.try_get("status")?;
            let effective: String = row.try_get("effective_date")?;
            Ok((
                row.try_get("sequence")?,
                status(&status_text)?,
                day(&effective)?,
            ))
        })
        .collect()
}

/// Takes the `rules_state` row for a registry write (serialising registry writers) and returns
/// the database's time of the write, µs.
pub async fn mark_changed(tx: &mut Tx, now_us_sql: &str) -> Result<i64, DbError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE rules_state SET registry_generation = registry_generation + 1 \
         WHERE singleton = 1 RETURNING {now_us_sql} AS now_us"
    )))
    .fetch_one(&mut **tx)
    .await?;
    Ok(row.try_get("now_us")?)
}

/// The provider `uscc` as `tx` sees it, without data centers.
pub async fn current(tx: &mut Tx, uscc: &Uscc) -> Result<Option<Provider>, DbError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {PROVIDER_COLUMNS} FROM providers WHERE uscc = $1"
    )))
    .bind(uscc.as_str().to_owned())
    .fetch_optional(&mut **tx)
    .await?;
    row.as_ref().map(provider_row).transpose()
}

/// The data centers of `uscc` as `tx` sees them, in registration order.
pub async fn data_centers_in(tx: &mut Tx, uscc: &Uscc) -> Result<Vec<DataCenter>, DbError> {
    let rows = sqlx::query(
        "SELECT uscc, name, division_code, capacity_pflops, status FROM provider_data_centers \
         WHERE uscc = $1 ORDER BY position",
    )
    .bind(uscc.as_str().to_owned())
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|row| data_center_row(row).map(|(_, center)| center))
        .collect()
}

/// Appends status change `sequence` of `uscc`.
async fn append_change(tx: &mut Tx, uscc: &Uscc, change: &StatusChange) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO provider_status_changes \
         (uscc, sequence, status, effective_date, reason, actor, recorded_us) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(uscc.as_str().to_owned())
    .bind(change.sequence)
    .bind(change.status.as_str())
    .bind(change.effective_date.to_string())
    .bind(change.reason.clone())
    .bind(change.actor.clone())
    .bind(change.recorded_us)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Inserts `registration` as an admitted provider by `actor` at `now_us`, with its data
/// centers and its first status change; returns the provider.
pub async fn insert(
    tx: &mut Tx,
    registration: &Registration,
    actor: &str,
    now_us: i64,
) -> Result<Provider, DbError> {
    let code = registration.uscc.as_str().to_owned();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO providers ({PROVIDER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $6)"
    )))
    .bind(code.clone())
    .bind(registration.name.clone())
    .bind(ProviderStatus::Admitted.as_str())
    .bind(registration.effective_date.to_string())
    .bind(registration.reason.clone())
    .bind(now_us)
    .execute(&mut **tx)
    .await?;
    for (position, center) in registration.data_centers.iter().enumerate() {
        sqlx::query(
            "INSERT INTO provider_data_centers \
             (uscc, position, name, division_code, capacity_pflops, status) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(code.clone())
        .bind(i32::try_from(position).expect("at most 100 data centers"))
        .bind(center.name.clone())
        .bind(center.division_code.as_str().to_owned())
        .bind(center.capacity.as_str().to_owned())
        .bind(center.status.as_str())
        .execute(&mut **tx)
        .await?;
    }
    let change = StatusChange {
        sequence: 1,
        status: ProviderStatus::Admitted,
        effective_date: registration.effective_date,
        reason: registration.reason.clone(),
        actor: actor.to_owned(),
        recorded_us: now_us,
    };
    append_change(tx, &registration.uscc, &change).await?;
    Ok(Provider {
        uscc: registration.uscc.clone(),
        name: registration.name.clone(),
        status: ProviderStatus::Admitted,
        effective_date: registration.effective_date,
        reason: registration.reason.clone(),
        data_centers: registration.data_centers.clone(),
        registered_us: now_us,
        updated_us: now_us,
    })
}

/// Records `update` by `actor` at `now_us` as the next change of its provider and makes it the
/// current status; returns the change.
pub async fn update_status(
    tx: &mut Tx,
    update: &StatusUpdate,
    actor: &str,
    now_us: i64,
) -> Result<StatusChange, DbError> {
    let code = update.uscc.as_str().to_owned();
    let last: i64 = sqlx::query_scalar(
        "SELECT COALESCE(MAX(sequence), 0) FROM provider_status_changes WHERE uscc = $1",
    )
    .bind(code.clone())
    .fetch_one(&mut **tx)
    .await?;
    let change = StatusChange {
        sequence: last + 1,
        status: update.status,
        effective_date: update.effective_date,
        reason: update.reason.clone(),
        actor: actor.to_owned(),
        recorded_us: now_us,
    };
    append_change(tx, &update.uscc, &change).await?;
    sqlx::query(
        "UPDATE providers SET status = $2, effective_date = $3, reason = $4, updated_us = $5 \
         WHERE uscc = $1",
    )
    .bind(code)
    .bind(update.status.as_str())
    .bind(update.effective_date.to_string())
    .bind(update.reason.clone())
    .bind(now_us)
    .execute(&mut **tx)
    .await?;
    Ok(change)
}
