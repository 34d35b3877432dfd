//! The audit trail of every service: who changed what, when, from where, with what outcome,
//! under which trace.
//!
//! - A change that happened is recorded by its use case **in the transaction of the change**
//!   ([`append`]), so the trail and the state cannot disagree.
//! - A mutating call that was refused (by the access layer, or by the service: invalid input,
//!   a rule, a conflict) changed nothing; the access layer records it afterwards in a
//!   transaction of its own ([`AuditSink::record_refusal`]).
//! - The table is append-only: on SQLite triggers refuse UPDATE and DELETE; on PostgreSQL the
//!   runtime role the services connect as has neither privilege (see `db::RUNTIME_ROLE`).
//!
//! Every service's schema has `audit_log(audit_id, occurred_us, actor, principal, role,
//! on_behalf_of, rpc, targets, peer, outcome, trace_id, request_id)`.

pub mod grpc;

use std::net::SocketAddr;

use sqlx::Row;
use subsidy_proto::access::MethodAccess;

use crate::auth::{Caller, Principal, PrincipalKind};
use crate::db::{Db, DbError, Kind, bind_padding, padded_insert};

/// The outcome recorded for a change that happened.
pub const OUTCOME_OK: &str = "OK";
/// Most targets named in one record.
pub const TARGETS_MAX: usize = 16;

/// One entry of the audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    /// Who, as histories name it (`reviewer:r.wang`, `service:application for …`).
    pub actor: String,
    /// The caller's scope (`user:r.wang`, `service:application`), or `anonymous`.
    pub principal: String,
    /// The role the call was admitted under (`service` for a service), or empty.
    pub role: String,
    /// For a service: the person it acted for (`role:subject`).
    pub on_behalf_of: Option<String>,
    /// The RPC (`/package.Service/Method`).
    pub rpc: String,
    /// The ids the call named or made, comma-separated.
    pub targets: String,
    /// The caller's address.
    pub peer: Option<String>,
    /// `OK`, or `CODE` / `CODE REASON` of the refusal.
    pub outcome: String,
    /// The W3C trace id of the call.
    pub trace_id: String,
    /// The caller's request id, if it sent one.
    pub request_id: Option<String>,
}

/// Who makes the change a request asks for: the authenticated caller as histories, ledgers
/// and audit records name it, its idempotency scope, and the audit record of the call.
#[derive(Clone, Debug)]
pub struct Changer {
    /// The caller as records name it ([`Caller::actor`]).
    pub actor: String,
    /// The idempotency scope (the authenticated principal).
    pub scope: String,
    /// The audit record of the call, naming no target yet.
    pub audit: AuditRecord,
}

impl Changer {
    /// The authenticated caller of `request`, making a change under `request_id`.
    pub fn of<T>(request: &tonic::Request<T>, request_id: &str) -> Result<Changer, tonic::Status> {
        let caller = Caller::of(request)?;
        Ok(Changer {
            actor: caller.actor(),
            scope: caller.principal.scope(),
            audit: AuditRecord::change(caller, &[], Some(request_id)),
        })
    }
}

impl AuditRecord {
    /// A change made by `caller` that named or made `targets`.
    pub fn change(caller: &Caller, targets: &[&str], request_id: Option<&str>) -> Self {
        AuditRecord {
            actor: caller.actor(),
            principal: caller.principal.scope(),
            role: caller.role_name().to_owned(),
            on_behalf_of: caller
                .principal
                .on_behalf_of
                .as_ref()
                .map(|person| format!("{}:{}", person.role, person.subject)),
            rpc: caller.rule.path.to_owned(),
            targets: targets
                .iter()
                .take(TARGETS_MAX)
                .copied()
                .collect::<Vec<_>>()
                .join(","),
            peer: caller.peer.map(|peer| peer.to_string()),
            outcome: OUTCOME_OK.to_owned(),
            trace_id: crate::telemetry::current_trace_id(),
            request_id: request_id.map(str::to_owned),
        }
    }

    /// The same record naming `targets`.
    pub fn with_targets(&self, targets: &[&str]) -> Self {
        AuditRecord {
            targets: targets
                .iter()
                .take(TARGETS_MAX)
                .copied()
                .collect::<Vec<_>>()
                .join(","),
            ..self.clone()
        }
    }

    /// A mutating call of an admitted caller that the service refused.
    pub fn refused(caller: &Caller, status: &tonic::Status) -> Self {
        AuditRecord {
            outcome: outcome(status),
            ..AuditRecord::change(caller, &[], None)
        }
    }

    /// A mutating call the access layer did not admit (the principal when it was known).
    pub fn unadmitted(
        rule: &MethodAccess,
        principal: Option<&Principal>,
        peer: Option<SocketAddr>,
        status: &tonic::Status,
    ) -> Self {
        let (actor, scope) = match principal {
            Some(principal) => {
                let actor = match &principal.kind {
                    PrincipalKind::Service(service) => format!("service:{}", service.short_name()),
                    PrincipalKind::Agency => format!("agency:{}", principal.subject),
                    PrincipalKind::Person => format!("person:{}", principal.subject),
                };
                (actor, principal.scope())
            }
            None => ("anonymous".to_owned(), "anonymous".to_owned()),
        };
        AuditRecord {
            actor,
            principal: scope,
            role: String::new(),
            on_behalf_of: None,
            rpc: rule.path.to_owned(),
            targets: String::new(),
            peer: peer.map(|peer| peer.to_string()),
            outcome: outcome(status),
            trace_id: crate::telemetry::current_trace_id(),
            request_id: None,
        }
    }
}

fn outcome(status: &tonic::Status) -> String {
    let code = format!("{:?}", status.code());
    match subsidy_proto::status::reason(status) {
        Some(reason) => format!("{code} {reason}"),
        None => code,
    }
}

const COLUMNS: &str = "audit_id, occurred_us, actor, principal, role, on_behalf_of, rpc, \
                       targets, peer, outcome, trace_id, request_id";

/// The kinds of the columns, in order.
const KINDS: [Kind; 12] = [
    Kind::Text,
    Kind::Int,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Text,
];
/// Most records written by one statement.
const RECORDS_PER_STATEMENT_MAX: usize = 64;

/// Appends `records`, stamped `now_us`, in the transaction `tx` (the change's own).
pub async fn append(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    records: &[AuditRecord],
    now_us: i64,
) -> Result<(), DbError> {
    for chunk in records.chunks(RECORDS_PER_STATEMENT_MAX) {
        let sql = padded_insert(
            &format!("INSERT INTO audit_log ({COLUMNS})"),
            "*",
            chunk.len(),
            &KINDS,
            "",
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for record in chunk {
            query = query
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(now_us)
                .bind(record.actor.clone())
                .bind(record.principal.clone())
                .bind(record.role.clone())
                .bind(record.on_behalf_of.clone())
                .bind(record.rpc.clone())
                .bind(record.targets.clone())
                .bind(record.peer.clone())
                .bind(record.outcome.clone())
                .bind(record.trace_id.clone())
                .bind(record.request_id.clone());
        }
        bind_padding(query, &KINDS, chunk.len())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Where the access layer records refused changes: the service's database.
#[derive(Clone, Debug)]
pub struct AuditSink {
    db: Db,
}

impl AuditSink {
    /// A sink writing to `db`.
    pub fn new(db: Db) -> Self {
        AuditSink { db }
    }

    /// Records a refused change in a transaction of its own. Failing to record a refusal does
    /// not fail the call (it changed nothing); it is logged.
    pub async fn record_refusal(&self, record: AuditRecord) {
        let result = async {
            let mut tx = self.db.begin_write().await?;
            let now_us = crate::time::now_us();
            append(&mut tx, &[record], now_us).await?;
            tx.commit().await?;
            Ok::<_, DbError>(())
        }
        .await;
        if let Err(error) = result {
            tracing::warn!(%error, "a refused call could not be recorded in the audit trail");
        }
    }
}

/// One stored audit record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAuditRecord {
    /// Its id (UUID v7, in time order).
    pub audit_id: String,
    /// When, microseconds since the Unix epoch.
    pub occurred_us: i64,
    /// The record.
    pub record: AuditRecord,
}

/// Filters of an audit listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only records of this principal scope.
    pub principal: Option<String>,
    /// Only records of this RPC path.
    pub rpc: Option<String>,
    /// Only records naming this target id.
    pub target: Option<String>,
}

/// Records after `after_audit_id` (exclusive) in time order, at most `limit`.
pub async fn list(
    db: &Db,
    filter: &AuditFilter,
    after_audit_id: &str,
    limit: i64,
) -> Result<Vec<StoredAuditRecord>, DbError> {
    let mut sql = format!("SELECT {COLUMNS} FROM audit_log WHERE audit_id > $1");
    let mut binds = vec![after_audit_id.to_owned()];
    if let Some(principal) = &filter.principal {
        binds.push(principal.clone());
        sql.push_str(&format!(" AND principal = ${}", binds.len()));
    }
    if let Some(rpc) = &filter.rpc {
        binds.push(rpc.clone());
        sql.push_str(&format!(" AND rpc = ${}", binds.len()));
    }
    if let Some(target) = &filter.target {
        binds.push(format!("%{target}%"));
        sql.push_str(&format!(" AND targets LIKE ${}", binds.len()));
    }
    sql.push_str(&format!(" ORDER BY audit_id LIMIT {limit}"));
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for bind in binds {
        query = query.bind(bind);
    }
    let rows = query.fetch_all(&db.pool).await?;
    rows.iter()
        .map(|row| {
            Ok(StoredAuditRecord {
                audit_id: row.try_get("audit_id")?,
                occurred_us: row.try_get("occurred_us")?,
                record: AuditRecord {
                    actor: row.try_get("actor")?,
                    principal: row.try_get("principal")?,
                    role: row.try_get("role")?,
                    on_behalf_of: row.try_get("on_behalf_of")?,
                    rpc: row.try_get("rpc")?,
                    targets: row.try_get("targets")?,
                    peer: row.try_get("peer")?,
                    outcome: row.try_get("outcome")?,
                    trace_id: row.try_get("trace_id")?,
                    request_id: row.try_get("request_id")?,
                },
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(DbError::from)
}
