//! Wire ↔ domain conversion and error classification for `subsidy.budget.v1.BudgetService`.

use subsidy_common::db::{DbError, timestamp_from_us};
use subsidy_common::idempotency::fingerprint;
use subsidy_common::paging::{decode_token, encode_token, page_size};
use subsidy_common::{Money, RequestId, Uscc};
use subsidy_proto::budget as pb;
use subsidy_proto::status::{self as st, FieldViolation};
use tonic::{Code, Request, Response, Status};

use crate::domain::{
    BudgetError, Commit, DISPLAY_NAME_LEN_MAX, HOLD_SECONDS_DEFAULT, HOLD_SECONDS_MAX, LedgerKind,
    NewPool, PoolId, REASON_LEN_MAX, REFERENCE_LEN_MAX, Release, Reserve,
};
use crate::storage::{
    Actor, PoolRow, ReservationFilter, ReservationRow, ReservationState, Store, StoredEntry,
};

/// The `ErrorInfo` domain of every budget error.
pub const DOMAIN: &str = "subsidy.budget";
/// Metadata key naming the caller, recorded in the ledger.
pub const ACTOR_METADATA_KEY: &str = "x-subsidy-actor";
/// Default and largest page sizes.
const POOLS_PAGE_DEFAULT: u32 = 50;
const POOLS_PAGE_MAX: u32 = 500;
const RESERVATIONS_PAGE_DEFAULT: u32 = 50;
const RESERVATIONS_PAGE_MAX: u32 = 500;
const LEDGER_PAGE_DEFAULT: u32 = 100;
const LEDGER_PAGE_MAX: u32 = 1000;
/// Default and largest batch of one expiry call.
const EXPIRE_LIMIT_DEFAULT: i64 = 1000;
const EXPIRE_LIMIT_MAX: i64 = 10_000;

impl From<BudgetError> for Status {
    /// The one place where budget errors become gRPC statuses. Database details are logged
    /// here and never sent to the caller.
    fn from(error: BudgetError) -> Status {
        let (code, reason) = match &error {
            BudgetError::Invalid(violations) => return st::invalid_argument(DOMAIN, violations),
            BudgetError::PoolNotFound => (Code::NotFound, "POOL_NOT_FOUND"),
            BudgetError::PoolAlreadyExists => (Code::AlreadyExists, "POOL_ALREADY_EXISTS"),
            BudgetError::ReservationNotFound => (Code::NotFound, "RESERVATION_NOT_FOUND"),
            BudgetError::PoolExhausted => (Code::FailedPrecondition, "POOL_EXHAUSTED"),
            BudgetError::BeneficiaryCapExceeded => {
                (Code::FailedPrecondition, "BENEFICIARY_CAP_EXCEEDED")
            }
            BudgetError::ReservationCapExceeded => {
                (Code::FailedPrecondition, "RESERVATION_CAP_EXCEEDED")
            }
            BudgetError::ReservationNotHeld => (Code::FailedPrecondition, "RESERVATION_NOT_HELD"),
            BudgetError::CommitExceedsHold => (Code::FailedPrecondition, "COMMIT_EXCEEDS_HOLD"),
            BudgetError::RequestIdReused => (Code::AlreadyExists, "REQUEST_ID_REUSED"),
            BudgetError::Db(DbError::Unavailable(source)) => {
                tracing::warn!(error = %source, "database unavailable");
                return st::with_reason(
                    Code::Unavailable,
                    DOMAIN,
                    "STORAGE_UNAVAILABLE",
                    "the budget database is unavailable; retry with the same request_id",
                );
            }
            BudgetError::Db(other) => {
                tracing::error!(error = %other, "budget storage failed");
                return st::with_reason(Code::Internal, DOMAIN, "INTERNAL", "internal error");
            }
        };
        st::with_reason(code, DOMAIN, reason, error.to_string())
    }
}

fn invalid(violations: Vec<FieldViolation>) -> Status {
    BudgetError::Invalid(violations).into()
}

/// Collects field violations while parsing a request.
#[derive(Default)]
struct Violations(Vec<FieldViolation>);

impl Violations {
    fn add(&mut self, field: &str, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    fn request_id(&mut self, text: &str) -> Option<RequestId> {
        RequestId::parse(text)
            .map_err(|e| self.add("request_id", e.to_string()))
            .ok()
    }

    fn pool_id(&mut self, field: &str, text: &str) -> Option<PoolId> {
        PoolId::parse(text).map_err(|e| self.add(field, e)).ok()
    }

    fn uscc(&mut self, field: &str, text: &str) -> Option<Uscc> {
        Uscc::parse(text)
            .map_err(|e| self.add(field, e.to_string()))
            .ok()
    }

    /// A positive amount.
    fn amount(
        &mut self,
        field: &str,
        value: Option<&subsidy_proto::google::r#type::Money>,
    ) -> Option<Money> {
        let Some(value) = value else {
            self.add(field, "is required");
            return None;
        };
        match Money::from_proto(value) {
            Ok(money) if money.is_zero() => {
                self.add(field, "must be positive");
                None
            }
            Ok(money) => Some(money),
            Err(error) => {
                self.add(field, error.to_string());
                None
            }
        }
    }

    fn text(&mut self, field: &str, text: &str, max: usize) -> Option<String> {
        if text.trim().is_empty() {
            self.add(field, "is required");
            None
        } else if text.len() > max {
            self.add(field, format!("must be at most {max} bytes"));
            None
        } else {
            Some(text.to_owned())
        }
    }

    fn finish(self) -> Result<(), Status> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(invalid(self.0))
        }
    }
}

fn money(fen: i64) -> Option<subsidy_proto::google::r#type::Money> {
    Some(
        Money::from_fen(fen)
            .expect("stored amounts are valid money")
            .to_proto(),
    )
}

/// The wire form of a pool.
pub fn pool_to_proto(pool: &PoolRow) -> pb::Pool {
    pb::Pool {
        pool_id: pool.pool_id.clone(),
        display_name: pool.display_name.clone(),
        total: money(pool.total_fen),
        held: money(pool.held_fen),
        committed: money(pool.committed_fen),
        available: money(pool.total_fen - pool.held_fen - pool.committed_fen),
        beneficiary_cap: pool.beneficiary_cap_fen.and_then(money),
        reservation_cap: pool.reservation_cap_fen.and_then(money),
        default_hold_seconds: pool.default_hold_seconds,
        create_time: Some(timestamp_from_us(pool.created_us)),
        reservation_count: pool.reservation_count,
    }
}

fn state_to_proto(state: ReservationState) -> pb::ReservationState {
    match state {
        ReservationState::Held => pb::ReservationState::Held,
        ReservationState::Committed => pb::ReservationState::Committed,
        ReservationState::Released => pb::ReservationState::Released,
        ReservationState::Expired => pb::ReservationState::Expired,
    }
}

/// The wire form of a reservation.
pub fn reservation_to_proto(row: &ReservationRow) -> pb::Reservation {
    pb::Reservation {
        reservation_id: row.reservation_id.clone(),
        pool_id: row.pool_id.clone(),
        beneficiary_uscc: row.beneficiary_uscc.clone(),
        reference: row.reference.clone(),
        state: state_to_proto(row.state) as i32,
        held_amount: money(row.held_fen),
        committed_amount: money(row.committed_fen),
        released_amount: money(row.released_fen),
        create_time: Some(timestamp_from_us(row.created_us)),
        expire_time: Some(timestamp_from_us(row.expires_us)),
        settle_time: row.settled_us.map(timestamp_from_us),
        release_reason: row.release_reason.clone().unwrap_or_default(),
    }
}

fn ledger_to_proto(stored: &StoredEntry) -> pb::LedgerEntry {
    let entry = &stored.entry;
    let kind = match LedgerKind::parse(&entry.kind) {
        Some(LedgerKind::PoolCreated) => pb::LedgerEntryKind::PoolCreated,
        Some(LedgerKind::Reserved) => pb::LedgerEntryKind::Reserved,
        Some(LedgerKind::Committed) => pb::LedgerEntryKind::Committed,
        Some(LedgerKind::Released) => pb::LedgerEntryKind::Released,
        Some(LedgerKind::Expired) => pb::LedgerEntryKind::Expired,
        None => pb::LedgerEntryKind::Unspecified,
    };
    pb::LedgerEntry {
        sequence: entry.sequence,
        kind: kind as i32,
        pool_id: entry.pool_id.clone(),
        reservation_id: entry.reservation_id.clone(),
        beneficiary_uscc: entry.beneficiary_uscc.clone(),
        actor: entry.actor.clone(),
        request_id: entry.request_id.clone(),
        amount: money(entry.amount_fen),
        released_amount: money(entry.released_fen),
        held_before: money(entry.held_before_fen),
        held_after: money(entry.held_after_fen),
        committed_before: money(entry.committed_before_fen),
        committed_after: money(entry.committed_after_fen),
        create_time: Some(timestamp_from_us(entry.created_us)),
        previous_hash: entry.previous_hash.clone(),
        entry_hash: stored.entry_hash.clone(),
    }
}

fn actor<T>(request: &Request<T>) -> Actor {
    let name = request
        .metadata()
        .get(ACTOR_METADATA_KEY)
        .and_then(|value| value.to_str().ok())
        .filter(|value| !value.is_empty() && value.len() <= 128)
        .unwrap_or("anonymous");
    Actor(name.to_owned())
}

fn page_error(field: &str, error: impl ToString) -> Status {
    invalid(vec![FieldViolation::new(field, error.to_string())])
}

/// The gRPC face of the budget.
#[derive(Clone, Debug)]
pub struct BudgetGrpc {
    store: Store,
}

impl BudgetGrpc {
    /// Serves `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[tonic::async_trait]
impl pb::budget_service_server::BudgetService for BudgetGrpc {
    async fn create_pool(
        &self,
        request: Request<pb::CreatePoolRequest>,
    ) -> Result<Response<pb::CreatePoolResponse>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        let mut v = Violations::default();
        let request_id = v.request_id(&req.request_id);
        let pool_id = v.pool_id("pool_id", &req.pool_id);
        let display_name = v.text("display_name", &req.display_name, DISPLAY_NAME_LEN_MAX);
        let total = v.amount("total", req.total.as_ref());
        let beneficiary_cap = req
            .beneficiary_cap
            .as_ref()
            .and_then(|cap| v.amount("beneficiary_cap", Some(cap)));
        let reservation_cap = req
            .reservation_cap
            .as_ref()
            .and_then(|cap| v.amount("reservation_cap", Some(cap)));
        if !(0..=HOLD_SECONDS_MAX).contains(&req.default_hold_seconds) {
            v.add(
                "default_hold_seconds",
                format!("must be 0 to {HOLD_SECONDS_MAX}"),
            );
        }
        v.finish()?;
        let (Some(request_id), Some(pool_id), Some(display_name), Some(total)) =
            (request_id, pool_id, display_name, total)
        else {
            unreachable!("finish() returned the violations of missing fields");
        };
        let new = NewPool {
            pool_id,
            display_name,
            total,
            beneficiary_cap,
            reservation_cap,
            default_hold_seconds: if req.default_hold_seconds == 0 {
                HOLD_SECONDS_DEFAULT
            } else {
                req.default_hold_seconds
            },
        };
        let response = self
            .store
            .create_pool(
                &new,
                &request_id,
                &fingerprint("CreatePool", &req),
                &actor,
                |pool| pb::CreatePoolResponse {
                    pool: Some(pool_to_proto(pool)),
                },
            )
            .await?;
        Ok(Response::new(response))
    }

    async fn get_pool(
        &self,
        request: Request<pb::GetPoolRequest>,
    ) -> Result<Response<pb::GetPoolResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        let pool_id = v.pool_id("pool_id", &req.pool_id);
        v.finish()?;
        let pool_id = pool_id.expect("validated");
        let pool = self
            .store
            .get_pool(pool_id.as_str())
            .await?
            .ok_or(BudgetError::PoolNotFound)?;
        Ok(Response::new(pb::GetPoolResponse {
            pool: Some(pool_to_proto(&pool)),
        }))
    }

    async fn list_pools(
        &self,
        request: Request<pb::ListPoolsRequest>,
    ) -> Result<Response<pb::ListPoolsResponse>, Status> {
        let req = request.into_inner();
        let size = page_size(req.page_size, POOLS_PAGE_DEFAULT, POOLS_PAGE_MAX)
            .map_err(|e| page_error("page_size", e))?;
        let after = decode_token("pools", &req.page_token)
            .map_err(|e| page_error("page_token", e))?
            .unwrap_or_default();
        let mut pools = self.store.list_pools(&after, i64::from(size) + 1).await?;
        let next_page_token = next_token(&mut pools, size, |p| encode_token("pools", &p.pool_id));
        Ok(Response::new(pb::ListPoolsResponse {
            pools: pools.iter().map(pool_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn reserve(
        &self,
        request: Request<pb::ReserveRequest>,
    ) -> Result<Response<pb::ReserveResponse>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        let mut v = Violations::default();
        let request_id = v.request_id(&req.request_id);
        let pool_id = v.pool_id("pool_id", &req.pool_id);
        let beneficiary = v.uscc("beneficiary_uscc", &req.beneficiary_uscc);
        let amount = v.amount("amount", req.amount.as_ref());
        let reference = v.text("reference", &req.reference, REFERENCE_LEN_MAX);
        if !(0..=HOLD_SECONDS_MAX).contains(&req.hold_seconds) {
            v.add("hold_seconds", format!("must be 0 to {HOLD_SECONDS_MAX}"));
        }
        v.finish()?;
        let (Some(request_id), Some(pool_id), Some(beneficiary), Some(amount), Some(reference)) =
            (request_id, pool_id, beneficiary, amount, reference)
        else {
            unreachable!("finish() returned the violations of missing fields");
        };
        let cmd = Reserve {
            request_id,
            pool_id,
            beneficiary,
            amount,
            reference,
            hold_seconds: (req.hold_seconds > 0).then_some(req.hold_seconds),
        };
        let response = self
            .store
            .reserve(&cmd, &fingerprint("Reserve", &req), &actor, |row| {
                pb::ReserveResponse {
                    reservation: Some(reservation_to_proto(row)),
                }
            })
            .await
            .map_err(|error| match error {
                // A reservation against a pool that does not exist is bad input, not a lookup.
                BudgetError::PoolNotFound => st::invalid_argument_with_reason(
                    DOMAIN,
                    "POOL_NOT_FOUND",
                    &[FieldViolation::new("pool_id", "no such pool")],
                ),
                other => other.into(),
            })?;
        Ok(Response::new(response))
    }

    async fn commit(
        &self,
        request: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        let mut v = Violations::default();
        let request_id = v.request_id(&req.request_id);
        let reservation_id = v.text("reservation_id", &req.reservation_id, 64);
        let amount = v.amount("amount", req.amount.as_ref());
        v.finish()?;
        let (Some(request_id), Some(reservation_id), Some(amount)) =
            (request_id, reservation_id, amount)
        else {
            unreachable!("finish() returned the violations of missing fields");
        };
        let cmd = Commit {
            request_id,
            reservation_id,
            amount,
        };
        let response = self
            .store
            .commit(&cmd, &fingerprint("Commit", &req), &actor, |row| {
                pb::CommitResponse {
                    reservation: Some(reservation_to_proto(row)),
                }
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        let mut v = Violations::default();
        let request_id = v.request_id(&req.request_id);
        let reservation_id = v.text("reservation_id", &req.reservation_id, 64);
        let reason = v.text("reason", &req.reason, REASON_LEN_MAX);
        v.finish()?;
        let (Some(request_id), Some(reservation_id), Some(reason)) =
            (request_id, reservation_id, reason)
        else {
            unreachable!("finish() returned the violations of missing fields");
        };
        let cmd = Release {
            request_id,
            reservation_id,
            reason,
        };
        let response = self
            .store
            .release(&cmd, &fingerprint("Release", &req), &actor, |row| {
                pb::ReleaseResponse {
                    reservation: Some(reservation_to_proto(row)),
                }
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn expire_reservations(
        &self,
        request: Request<pb::ExpireReservationsRequest>,
    ) -> Result<Response<pb::ExpireReservationsResponse>, Status> {
        let req = request.into_inner();
        let limit = match i64::from(req.limit) {
            0 => EXPIRE_LIMIT_DEFAULT,
            n if (1..=EXPIRE_LIMIT_MAX).contains(&n) => n,
            _ => {
                return Err(page_error(
                    "limit",
                    format!("must be 0 to {EXPIRE_LIMIT_MAX}"),
                ));
            }
        };
        let expired_count = self.store.expire_due(limit).await?;
        Ok(Response::new(pb::ExpireReservationsResponse {
            expired_count,
        }))
    }

    async fn get_reservation(
        &self,
        request: Request<pb::GetReservationRequest>,
    ) -> Result<Response<pb::GetReservationResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        let reservation_id = v.text("reservation_id", &req.reservation_id, 64);
        v.finish()?;
        let row = self
            .store
            .get_reservation(&reservation_id.expect("validated"))
            .await?
            .ok_or(BudgetError::ReservationNotFound)?;
        Ok(Response::new(pb::GetReservationResponse {
            reservation: Some(reservation_to_proto(&row)),
        }))
    }

    async fn list_reservations(
        &self,
        request: Request<pb::ListReservationsRequest>,
    ) -> Result<Response<pb::ListReservationsResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        let pool_id = v.pool_id("pool_id", &req.pool_id);
        if !req.beneficiary_uscc.is_empty() {
            v.uscc("beneficiary_uscc", &req.beneficiary_uscc);
        }
        let state = match pb::ReservationState::try_from(req.state) {
            Ok(pb::ReservationState::Unspecified) => None,
            Ok(pb::ReservationState::Held) => Some(ReservationState::Held),
            Ok(pb::ReservationState::Committed) => Some(ReservationState::Committed),
            Ok(pb::ReservationState::Released) => Some(ReservationState::Released),
            Ok(pb::ReservationState::Expired) => Some(ReservationState::Expired),
            Err(_) => {
                v.add("state", "unknown state");
                None
            }
        };
        let size = page_size(
            req.page_size,
            RESERVATIONS_PAGE_DEFAULT,
            RESERVATIONS_PAGE_MAX,
        )
        .map_err(|e| v.add("page_size", e.to_string()))
        .ok();
        let after = decode_token("reservations", &req.page_token)
            .ok()
            .map(|key| {
                key.map(|key| {
                    key.split_once('/')
                        .and_then(|(us, id)| Some((us.parse::<i64>().ok()?, id.to_owned())))
                })
            });
        let after = match after {
            Some(None) => None,
            Some(Some(Some(position))) => Some(position),
            _ => {
                v.add("page_token", "page_token is not valid");
                None
            }
        };
        v.finish()?;
        let size = size.expect("validated");
        let filter = ReservationFilter {
            pool_id: pool_id.expect("validated").as_str().to_owned(),
            beneficiary_uscc: req.beneficiary_uscc.to_ascii_uppercase(),
            reference: req.reference.clone(),
            state,
        };
        let mut rows = self
            .store
            .list_reservations(&filter, after, i64::from(size) + 1)
            .await?;
        let next_page_token = next_token(&mut rows, size, |r| {
            encode_token(
                "reservations",
                &format!("{}/{}", r.created_us, r.reservation_id),
            )
        });
        Ok(Response::new(pb::ListReservationsResponse {
            reservations: rows.iter().map(reservation_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn get_beneficiary_usage(
        &self,
        request: Request<pb::GetBeneficiaryUsageRequest>,
    ) -> Result<Response<pb::GetBeneficiaryUsageResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        let pool_id = v.pool_id("pool_id", &req.pool_id);
        let uscc = v.uscc("beneficiary_uscc", &req.beneficiary_uscc);
        v.finish()?;
        let (pool_id, uscc) = (pool_id.expect("validated"), uscc.expect("validated"));
        let usage = self
            .store
            .usage(pool_id.as_str(), uscc.as_str())
            .await?
            .ok_or(BudgetError::PoolNotFound)?;
        let used = usage.held_fen + usage.committed_fen;
        Ok(Response::new(pb::GetBeneficiaryUsageResponse {
            usage: Some(pb::BeneficiaryUsage {
                pool_id: pool_id.as_str().to_owned(),
                beneficiary_uscc: uscc.as_str().to_owned(),
                held: money(usage.held_fen),
                committed: money(usage.committed_fen),
                cap: usage.cap_fen.and_then(money),
                remaining: usage.cap_fen.and_then(|cap| money((cap - used).max(0))),
            }),
        }))
    }

    async fn list_ledger_entries(
        &self,
        request: Request<pb::ListLedgerEntriesRequest>,
    ) -> Result<Response<pb::ListLedgerEntriesResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        if !req.pool_id.is_empty() {
            v.pool_id("pool_id", &req.pool_id);
        }
        let size = page_size(req.page_size, LEDGER_PAGE_DEFAULT, LEDGER_PAGE_MAX)
            .map_err(|e| v.add("page_size", e.to_string()))
            .ok();
        let after = match decode_token("ledger", &req.page_token) {
            Ok(None) => Some(0),
            Ok(Some(key)) => key
                .parse::<i64>()
                .map_err(|_| v.add("page_token", "page_token is not valid"))
                .ok(),
            Err(e) => {
                v.add("page_token", e.to_string());
                None
            }
        };
        v.finish()?;
        let size = size.expect("validated");
        let mut entries = self
            .store
            .list_ledger(&req.pool_id, after.expect("validated"), i64::from(size) + 1)
            .await?;
        let next_page_token = next_token(&mut entries, size, |e| {
            encode_token("ledger", &e.entry_id.to_string())
        });
        Ok(Response::new(pb::ListLedgerEntriesResponse {
            entries: entries.iter().map(ledger_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn verify_ledger(
        &self,
        _request: Request<pb::VerifyLedgerRequest>,
    ) -> Result<Response<pb::VerifyLedgerResponse>, Status> {
        let report = self.store.verify_ledger().await?;
        let (pool, sequence, problem) = report.first_problem.clone().unwrap_or_default();
        Ok(Response::new(pb::VerifyLedgerResponse {
            intact: report.first_problem.is_none(),
            entries_checked: report.entries_checked,
            first_broken_sequence: sequence,
            problem,
            first_broken_pool_id: pool,
        }))
    }
}

/// Trims a page fetched with one extra row and returns the token of the next page.
fn next_token<T>(rows: &mut Vec<T>, size: u32, token: impl Fn(&T) -> String) -> String {
    if rows.len() > size as usize {
        rows.truncate(size as usize);
        rows.last().map(token).unwrap_or_default()
    } else {
        String::new()
    }
}
