//! Rules storage: published policy versions (immutable rows, in publication order), the
//! denylist (replaced whole), and the generation counters every replica compares before an
//! evaluation. Each write is one transaction that first takes the `rules_state` row, so that
//! publications and replacements are serialised and their sequence numbers commit in order.

use std::collections::HashSet;

use chrono::NaiveDate;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use subsidy_common::db::{Db, DbError};
use subsidy_common::idempotency::{self, Claim};
use subsidy_common::{RequestId, Uscc};

use crate::domain::denylist::DenylistEntry;
use crate::domain::policy::{Parameters, PolicyRecord, PolicySpec, PolicyState, PolicyVersion};
use crate::domain::{DayRange, Program};
use crate::error::RulesError;

/// Migrations of each backend, embedded at compile time.
pub static MIGRATIONS_POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
/// Migrations of each backend, embedded at compile time.
pub static MIGRATIONS_SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Rows of one multi-row denylist insert (4 parameters each, far below SQLite's limit).
const DENYLIST_INSERT_BATCH: usize = 250;

const POLICY_COLUMNS: &str = "policy_id, version, effective_start, effective_end, parameters_json, \
     document_json, description, content_sha256, publisher, publish_sequence, published_us";

/// The change counters of the rules database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Generations {
    /// The publish sequence of the newest policy version.
    pub policy: i64,
    /// How many times the denylist was replaced.
    pub denylist: i64,
}

/// The denylist's identity: its hash and when it was put in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DenylistState {
    /// The SHA-256 of the canonical list.
    pub content_sha256: String,
    /// When it was put in place, µs; `None` if it never was.
    pub replaced_us: Option<i64>,
}

/// What a replacement of the denylist did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replacement {
    /// Entries of the new list.
    pub entry_count: i64,
    /// Codes not on the previous list.
    pub added_count: i64,
    /// Codes of the previous list no longer listed.
    pub removed_count: i64,
    /// The new list's hash.
    pub content_sha256: String,
    /// When, µs.
    pub replaced_us: i64,
}

/// Whether an idempotent request was done before.
pub enum Idempotent<'a> {
    /// The request carries this key and fingerprint.
    Keyed(&'a RequestId, &'a str),
    /// No key (the service seeding its shipped policies).
    Unkeyed,
}

fn decode_error(what: String) -> DbError {
    DbError::Other(sqlx::Error::Decode(what.into()))
}

fn day(text: &str) -> Result<NaiveDate, DbError> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| decode_error(format!("bad date {text}")))
}

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

fn denylist_entry(row: &AnyRow) -> Result<DenylistEntry, DbError> {
    let code: String = row.try_get("uscc")?;
    let listed: Option<String> = row.try_get("listed_date")?;
    Ok(DenylistEntry {
        uscc: Uscc::parse(&code).map_err(|_| decode_error(format!("bad USCC {code}")))?,
        reason: row.try_get("reason")?,
        source: row.try_get("source")?,
        listed_date: listed.as_deref().map(day).transpose()?,
    })
}

/// The rules database.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
    now: String,
}

impl Store {
    /// A store over `db`.
    pub fn new(db: Db) -> Self {
        let now = db.now_us_sql().to_owned();
        Store { db, now }
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Applies the rules migrations.
    pub async fn migrate(&self) -> Result<(), DbError> {
        self.db
            .migrate(&MIGRATIONS_POSTGRES, &MIGRATIONS_SQLITE)
            .await
    }

    /// The change counters, read in one statement.
    pub async fn generations(&self) -> Result<Generations, DbError> {
        let row = sqlx::query(
            "SELECT policy_generation, denylist_generation FROM rules_state WHERE singleton = 1",
        )
        .fetch_one(&self.db.pool)
        .await?;
        Ok(Generations {
            policy: row.try_get("policy_generation")?,
            denylist: row.try_get("denylist_generation")?,
        })
    }

    /// Published versions with a publish sequence above `after`, in publication order.
    pub async fn policies_after(&self, after: i64) -> Result<Vec<PolicyRecord>, DbError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {POLICY_COLUMNS} FROM policy_versions WHERE publish_sequence > $1 \
             ORDER BY publish_sequence"
        )))
        .bind(after)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(policy_record).collect()
    }

    /// Publishes `spec` as a new, immutable version. With a key, a replay returns the stored
    /// response and a reused key is refused; an existing version is refused either way.
    pub async fn publish<R: prost::Message + Default>(
        &self,
        spec: &PolicySpec,
        publisher: &str,
        key: Idempotent<'_>,
        respond: impl FnOnce(&PolicyRecord) -> R,
    ) -> Result<R, RulesError> {
        let mut tx = self.db.begin_write().await?;
        if let Idempotent::Keyed(request_id, fingerprint) = key {
            match idempotency::claim::<R>(
                &mut tx,
                request_id,
                "PublishPolicy",
                fingerprint,
                &self.now,
            )
            .await?
            {
                Claim::Replay(response) => return Ok(response),
                Claim::Reused => {
                    return Err(RulesError::RequestIdReused {
                        request_id: request_id.as_str().to_owned(),
                    });
                }
                Claim::Fresh => {}
            }
        }
        // Taking the state row first serialises publications, so the existence check below
        // sees any version a concurrent publication just committed.
        let state = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE rules_state SET policy_generation = policy_generation + 1 WHERE singleton = 1 \
             RETURNING policy_generation, {} AS now_us",
            self.now
        )))
        .fetch_one(&mut *tx)
        .await?;
        let sequence: i64 = state.try_get("policy_generation")?;
        let now_us: i64 = state.try_get("now_us")?;
        let policy_id = spec.program().policy_id();
        let version = spec.version.to_string();
        let exists = sqlx::query(
            "SELECT 1 AS one FROM policy_versions WHERE policy_id = $1 AND version = $2",
        )
        .bind(policy_id)
        .bind(&version)
        .fetch_optional(&mut *tx)
        .await?;
        if exists.is_some() {
            return Err(RulesError::PolicyVersionExists { policy_id, version });
        }
        let record = PolicyRecord {
            content_sha256: spec.content_sha256(),
            spec: spec.clone(),
            state: PolicyState::Published,
            publish_sequence: sequence,
            published_us: Some(now_us),
            publisher: publisher.to_owned(),
        };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO policy_versions ({POLICY_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        )))
        .bind(policy_id)
        .bind(&version)
        .bind(spec.effective.start().to_string())
        .bind(spec.effective.end().to_string())
        .bind(spec.parameters.to_json().to_string())
        .bind(&spec.document_json)
        .bind(&spec.description)
        .bind(&record.content_sha256)
        .bind(publisher)
        .bind(sequence)
        .bind(now_us)
        .execute(&mut *tx)
        .await?;
        let response = respond(&record);
        if let Idempotent::Keyed(request_id, _) = key {
            idempotency::store_response(&mut tx, request_id, &response).await?;
        }
        tx.commit().await?;
        Ok(response)
    }

    /// The content hash of a published version, if it exists.
    pub async fn content_sha256_of(
        &self,
        policy_id: &str,
        version: &str,
    ) -> Result<Option<String>, DbError> {
        Ok(sqlx::query_scalar(
            "SELECT content_sha256 FROM policy_versions WHERE policy_id = $1 AND version = $2",
        )
        .bind(policy_id)
        .bind(version)
        .fetch_optional(&self.db.pool)
        .await?)
    }

    /// The whole denylist.
    pub async fn denylist(&self) -> Result<Vec<DenylistEntry>, DbError> {
        let rows = sqlx::query(
            "SELECT uscc, reason, source, listed_date FROM denylist_entries ORDER BY uscc",
        )
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(denylist_entry).collect()
    }

    /// Entries after `after` in USCC order, optionally only `only`, with the list's state.
    pub async fn denylist_page(
        &self,
        only: &str,
        after: &str,
        limit: i64,
    ) -> Result<(Vec<DenylistEntry>, DenylistState), DbError> {
        let state = sqlx::query(
            "SELECT denylist_sha256, denylist_replaced_us FROM rules_state WHERE singleton = 1",
        )
        .fetch_one(&self.db.pool)
        .await?;
        let rows = sqlx::query(
            "SELECT uscc, reason, source, listed_date FROM denylist_entries \
             WHERE uscc > $1 AND ($2 = '' OR uscc = $2) ORDER BY uscc LIMIT $3",
        )
        .bind(after)
        .bind(only)
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        let entries = rows.iter().map(denylist_entry).collect::<Result<_, _>>()?;
        Ok((
            entries,
            DenylistState {
                content_sha256: state.try_get("denylist_sha256")?,
                replaced_us: state.try_get("denylist_replaced_us")?,
            },
        ))
    }

    /// Replaces the whole denylist with `entries` (codes unique), idempotent by `request_id`.
    pub async fn replace_denylist<R: prost::Message + Default>(
        &self,
        entries: &[DenylistEntry],
        content_sha256: &str,
        request_id: &RequestId,
        fingerprint: &str,
        respond: impl FnOnce(&Replacement) -> R,
    ) -> Result<R, RulesError> {
        let mut tx = self.db.begin_write().await?;
        match idempotency::claim::<R>(
            &mut tx,
            request_id,
            "ReplaceDenylist",
            fingerprint,
            &self.now,
        )
        .await?
        {
            Claim::Replay(response) => return Ok(response),
            Claim::Reused => {
                return Err(RulesError::RequestIdReused {
                    request_id: request_id.as_str().to_owned(),
                });
            }
            Claim::Fresh => {}
        }
        let state = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE rules_state SET denylist_generation = denylist_generation + 1, \
             denylist_sha256 = $1, denylist_replaced_us = {} WHERE singleton = 1 \
             RETURNING denylist_replaced_us",
            self.now
        )))
        .bind(content_sha256)
        .fetch_one(&mut *tx)
        .await?;
        let replaced_us: i64 = state.try_get("denylist_replaced_us")?;
        let previous: HashSet<String> = sqlx::query_scalar("SELECT uscc FROM denylist_entries")
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
        sqlx::query("DELETE FROM denylist_entries")
            .execute(&mut *tx)
            .await?;
        insert_denylist(&mut tx, entries).await?;
        let current: HashSet<&str> = entries.iter().map(|e| e.uscc.as_str()).collect();
        let added = current.iter().filter(|c| !previous.contains(**c)).count();
        let removed = previous
            .iter()
            .filter(|c| !current.contains(c.as_str()))
            .count();
        let replacement = Replacement {
            entry_count: entries.len() as i64,
            added_count: added as i64,
            removed_count: removed as i64,
            content_sha256: content_sha256.to_owned(),
            replaced_us,
        };
        let response = respond(&replacement);
        idempotency::store_response(&mut tx, request_id, &response).await?;
        tx.commit().await?;
        Ok(response)
    }
}

async fn insert_denylist(
    tx: &mut Transaction<'static, Any>,
    entries: &[DenylistEntry],
) -> Result<(), DbError> {
    for batch in entries.chunks(DENYLIST_INSERT_BATCH) {
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
