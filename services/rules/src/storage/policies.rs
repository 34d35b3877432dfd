//! The `policy_versions` table: one immutable row per published version.

use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};
use subsidy_common::db::DbError;

use super::{Tx, day, decode_error};
use crate::domain::policy::{Parameters, PolicyRecord, PolicySpec, PolicyState, PolicyVersion};
use crate::domain::{DayRange, Program};

const POLICY_COLUMNS: &str = "policy_id, version, effective_start, effective_end, parameters_json, \
     document_json, description, content_sha256, publisher, publish_sequence, published_us";

fn policy_record(row: &AnyRow) -> Result<PolicyRecord, DbError> {
    let policy_id: String = row.try_get("policy_id")?;
    let version: String = row.try_get("version")?;
    let program = Program::from_policy_id(&policy_id)
        .ok_or_else(|| decode_error(format!("unknown policy id {policy_id}")))?;
    let parse_version = PolicyVersion::parse(&version)
        .map_err(|_| decode_error(format!("bad version {version}")))?;
    let parameters_json: String = row.try_get("parameters_json")?;
    let parameters = serde_json::from_str(&parameters_json)
        .ok()
        .and_then(|value| Parameters::from_json(program, &value))
        .ok_or_else(|| decode_error(format!("bad parameters of {policy_id}@{version}")))?;
    let start: String = row.try_get("effective_start")?;
    let end: String = row.try_get("effective_end")?;
    let effective = DayRange::new(day(&start)?, day(&end)?)
        .ok_or_else(|| decode_error(format!("bad period of {policy_id}@{version}")))?;
    Ok(PolicyRecord {
        spec: PolicySpec {
            version: parse_version,
            effective,
            parameters,
            document_json: row.try_get("document_json")?,
            description: row.try_get("description")?,
        },
        content_sha256: row.try_get("content_sha256")?,
        state: PolicyState::Published,
        publish_sequence: row.try_get("publish_sequence")?,
        published_us: Some(row.try_get("published_us")?),
        publisher: row.try_get("publisher")?,
    })
}

/// Published versions with a publish sequence above `after`, in publication order.
pub async fn after(pool: &AnyPool, after: i64) -> Result<Vec<PolicyRecord>, DbError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {POLICY_COLUMNS} FROM policy_versions WHERE publish_sequence > $1 \
         ORDER BY publish_sequence"
    )))
    .bind(after)
    .fetch_all(pool)
    .await?;
    rows.iter().map(policy_record).collect()
}

/// The content hash of a published version, if it exists.
pub async fn content_sha256_of(
    pool: &AnyPool,
    policy_id: &str,
    version: &str,
) -> Result<Option<String>, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT content_sha256 FROM policy_versions WHERE policy_id = $1 AND version = $2",
    )
    .bind(policy_id)
    .bind(version)
    .fetch_optional(pool)
    .await?)
}

/// Takes the `rules_state` row for a publication: the next publish sequence and the database's
/// time, µs. Holding the row serialises publications until `tx` ends.
pub async fn next_publication(tx: &mut Tx, now_us_sql: &str) -> Result<(i64, i64), DbError> {
    let state = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE rules_state SET policy_generation = policy_generation + 1 WHERE singleton = 1 \
         RETURNING policy_generation, {now_us_sql} AS now_us"
    )))
    .fetch_one(&mut **tx)
    .await?;
    Ok((
        state.try_get("policy_generation")?,
        state.try_get("now_us")?,
    ))
}

/// Whether the version is already published (as `tx` sees it).
pub async fn exists(tx: &mut Tx, policy_id: &str, version: &str) -> Result<bool, DbError> {
    let row =
        sqlx::query("SELECT 1 AS one FROM policy_versions WHERE policy_id = $1 AND version = $2")
            .bind(policy_id)
            .bind(version)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(row.is_some())
}

/// Stores a published version.
pub async fn insert(tx: &mut Tx, record: &PolicyRecord) -> Result<(), DbError> {
    let spec = &record.spec;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO policy_versions ({POLICY_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    )))
    .bind(record.policy_id())
    .bind(spec.version.to_string())
    .bind(spec.effective.start().to_string())
    .bind(spec.effective.end().to_string())
    .bind(spec.parameters.to_json().to_string())
    .bind(&spec.document_json)
    .bind(&spec.description)
    .bind(&record.content_sha256)
    .bind(&record.publisher)
    .bind(record.publish_sequence)
    .bind(
        record
            .published_us
            .expect("a published version has its publication time"),
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}
