//! `subsidy.audit.v1.AuditService`, served by every service process over its own database.

use subsidy_proto::audit::audit_service_server::{AuditService, AuditServiceServer};
use subsidy_proto::audit::{self as pb, ListAuditRecordsRequest, ListAuditRecordsResponse};
use subsidy_proto::status as st;
use tonic::{Request, Response, Status};

use super::{AuditFilter, list};
use crate::db::Db;
use crate::edge::{self, PageLimits, PageRequest, Violations};

/// The `ErrorInfo` domain of the audit service.
pub const DOMAIN: &str = "subsidy.audit";
/// Longest filter value accepted, in characters.
const FILTER_LEN_MAX: usize = 256;

/// The audit listing of one service.
#[derive(Clone, Debug)]
pub struct AuditGrpc {
    db: Db,
    service: &'static str,
}

impl AuditGrpc {
    /// The listing of `service` over `db`.
    pub fn new(db: Db, service: &'static str) -> Self {
        AuditGrpc { db, service }
    }

    /// The tonic service.
    pub fn into_server(self) -> AuditServiceServer<AuditGrpc> {
        AuditServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl AuditService for AuditGrpc {
    async fn list_audit_records(
        &self,
        request: Request<ListAuditRecordsRequest>,
    ) -> Result<Response<ListAuditRecordsResponse>, Status> {
        let request = request.into_inner();
        let mut violations = Violations::new();
        let text = |violations: &mut Violations, field: &str, value: &str| {
            violations
                .optional_text(field, value, FILTER_LEN_MAX)
                .filter(|value| !value.is_empty())
        };
        let filter = AuditFilter {
            principal: text(&mut violations, "principal", &request.principal),
            rpc: text(&mut violations, "rpc", &request.rpc),
            target: text(&mut violations, "target", &request.target),
        };
        let page = violations.page(
            PageRequest {
                kind: "audit",
                size: request.page_size,
                token: &request.page_token,
                filters: &[&request.principal, &request.rpc, &request.target],
            },
            PageLimits::LONG,
        );
        if let Err(violations) = violations.finish() {
            return Err(st::invalid_argument(DOMAIN, &violations));
        }
        let page = page.expect("no violation means a page");
        let after = page.after.clone().unwrap_or_default();
        let mut rows = list(&self.db, &filter, &after, page.fetch_limit())
            .await
            .map_err(|error| edge::storage_failure(DOMAIN, self.service, &error))?;
        let next_page_token = page.finish(&mut rows, |row| row.audit_id.clone());
        Ok(Response::new(ListAuditRecordsResponse {
            records: rows
                .into_iter()
                .map(|row| pb::AuditRecord {
                    audit_id: row.audit_id,
                    occur_time: Some(edge::timestamp(row.occurred_us)),
                    actor: row.record.actor,
                    principal: row.record.principal,
                    role: row.record.role,
                    on_behalf_of: row.record.on_behalf_of.unwrap_or_default(),
                    rpc: row.record.rpc,
                    targets: row
                        .record
                        .targets
                        .split(',')
                        .filter(|target| !target.is_empty())
                        .map(str::to_owned)
                        .collect(),
                    peer: row.record.peer.unwrap_or_default(),
                    outcome: row.record.outcome,
                    trace_id: row.record.trace_id,
                    request_id: row.record.request_id.unwrap_or_default(),
                })
                .collect(),
            next_page_token,
        }))
    }
}
