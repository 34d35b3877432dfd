//! The edge of `subsidy.budget.v1.BudgetService`: parse and validate each request with the
//! shared kit, call one use case, render the answer through `wire`.

use subsidy_common::audit::Changer;
use subsidy_common::auth::{Caller, Tenant};
use subsidy_common::edge::{Page, PageLimits, PageRequest, Violations, keyset};
use subsidy_common::idempotency::fingerprint;
use subsidy_proto::budget as pb;
use tonic::{Request, Response, Status};

use crate::domain::{
    ClosePool, Commit, DISPLAY_NAME_LEN_MAX, Extend, HOLD_SECONDS_DEFAULT, HOLD_SECONDS_MAX,
    NewPool, PoolId, REASON_LEN_MAX, REFERENCE_LEN_MAX, RESERVATION_ID_LEN_MAX, Release,
    ReservationFilter, Reserve, Revoke,
};
use crate::error::BudgetError;
use crate::ops::{Budget, Who};
use crate::wire;

/// Pages of ListPools.
const POOLS_PAGE: PageLimits = PageLimits::STANDARD;
/// Pages of ListReservations.
const RESERVATIONS_PAGE: PageLimits = PageLimits::STANDARD;
/// Pages of ListLedgerEntries.
const LEDGER_PAGE: PageLimits = PageLimits::LONG;
/// Pages of ListCheckpoints.
const CHECKPOINTS_PAGE: PageLimits = PageLimits::LONG;
/// Default batch of one expiry call.
const EXPIRE_LIMIT_DEFAULT: i64 = 1000;
/// Largest batch of one expiry call.
const EXPIRE_LIMIT_MAX: i64 = 10_000;

fn pool_id(v: &mut Violations, field: &str, text: &str) -> Option<PoolId> {
    PoolId::parse(text).map_err(|e| v.add(field, e)).ok()
}

/// Which beneficiaries the caller of `request` may see.
fn tenant<T>(request: &Request<T>) -> Result<Tenant, Status> {
    Ok(Caller::of(request)?.tenant())
}

/// The gRPC face of the budget.
#[derive(Clone, Debug)]
pub struct BudgetGrpc {
    budget: Budget,
}

impl BudgetGrpc {
    /// Serves `budget`.
    pub fn new(budget: Budget) -> Self {
        Self { budget }
    }
}

fn parse_new_pool(req: &pb::CreatePoolRequest, v: &mut Violations) -> Option<NewPool> {
    let pool_id = pool_id(v, "pool_id", &req.pool_id);
    let display_name = v.text("display_name", &req.display_name, DISPLAY_NAME_LEN_MAX);
    let total = v.positive_money("total", req.total.as_ref());
    let beneficiary_cap =
        v.optional_positive_money("beneficiary_cap", req.beneficiary_cap.as_ref());
    let reservation_cap =
        v.optional_positive_money("reservation_cap", req.reservation_cap.as_ref());
    if !(0..=HOLD_SECONDS_MAX).contains(&req.default_hold_seconds) {
        v.add(
            "default_hold_seconds",
            format!("must be 0 to {HOLD_SECONDS_MAX}"),
        );
    }
    Some(NewPool {
        pool_id: pool_id?,
        display_name: display_name?,
        total: total?,
        beneficiary_cap: beneficiary_cap?,
        reservation_cap: reservation_cap?,
        default_hold_seconds: if req.default_hold_seconds == 0 {
            HOLD_SECONDS_DEFAULT
        } else {
            req.default_hold_seconds
        },
    })
}

fn parse_reserve(req: &pb::ReserveRequest, v: &mut Violations) -> Option<Reserve> {
    let request_id = v.request_id(&req.request_id);
    let pool_id = pool_id(v, "pool_id", &req.pool_id);
    let beneficiary = v.uscc("beneficiary_uscc", &req.beneficiary_uscc);
    let amount = v.positive_money("amount", req.amount.as_ref());
    let reference = v.text("reference", &req.reference, REFERENCE_LEN_MAX);
    if !(0..=HOLD_SECONDS_MAX).contains(&req.hold_seconds) {
        v.add("hold_seconds", format!("must be 0 to {HOLD_SECONDS_MAX}"));
    }
    Some(Reserve {
        request_id: request_id?,
        pool_id: pool_id?,
        beneficiary: beneficiary?,
        amount: amount?,
        reference: reference?,
        hold_seconds: (req.hold_seconds > 0).then_some(req.hold_seconds),
    })
}

/// The page of a list in write order (numbered from 1), of one pool when `pool` is not empty:
/// the page and the number it starts after. `kind` names the list in its page tokens.
fn pool_page(
    kind: &'static str,
    pool: &str,
    (size, token): (i32, &str),
    limits: PageLimits,
) -> Result<(Page, i64), Status> {
    filtered_page(kind, pool, &[], (size, token), limits)
}

/// Like [`pool_page`], with `more` filters (already validated) bound into the page tokens
/// after the pool.
fn filtered_page(
    kind: &'static str,
    pool: &str,
    more: &[&str],
    (size, token): (i32, &str),
    limits: PageLimits,
) -> Result<(Page, i64), Status> {
    let mut v = Violations::new();
    if !pool.is_empty() {
        pool_id(&mut v, "pool_id", pool);
    }
    let filters: Vec<&str> = std::iter::once(pool).chain(more.iter().copied()).collect();
    let page = v.page(
        PageRequest {
            kind,
            size,
            token,
            filters: &filters,
        },
        limits,
    );
    v.check(BudgetError::Invalid)?;
    let page = page.expect("validated");
    let after = page
        .after_number()
        .map_err(|f| BudgetError::Invalid(vec![f]))?;
    Ok((page, after))
}

#[tonic::async_trait]
impl pb::budget_service_server::BudgetService for BudgetGrpc {
    async fn create_pool(
        &self,
        request: Request<pb::CreatePoolRequest>,
    ) -> Result<Response<pb::CreatePoolResponse>, Status> {
        let who = Who::from(Changer::of(&request, &request.get_ref().request_id)?);
        let req = request.into_inner();
        let mut v = Violations::new();
        let request_id = v.request_id(&req.request_id);
        let new = parse_new_pool(&req, &mut v);
        v.check(BudgetError::Invalid)?;
        let (Some(request_id), Some(new)) = (request_id, new) else {
            unreachable!("finish() returned the violations of missing fields");
        };
        let response = self
            .budget
            .create_pool(
                &new,
                &request_id,
                &fingerprint("CreatePool", &req),
                &who,
                |pool| pb::CreatePoolResponse {
                    pool: Some(wire::pool(pool)),
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
        let mut v = Violations::new();
        let pool_id = pool_id(&mut v, "pool_id", &req.pool_id);
        v.check(BudgetError::Invalid)?;
        let pool_id = pool_id.expect("validated");
        let pool = self
            .budget
            .get_pool(pool_id.as_str())
            .await?
            .ok_or_else(|| BudgetError::PoolNotFound {
                pool_id: pool_id.to_string(),
            })?;
        Ok(Response::new(pb::GetPoolResponse {
            pool: Some(wire::pool(&pool)),
        }))
    }

    async fn list_pools(
        &self,
        request: Request<pb::ListPoolsRequest>,
    ) -> Result<Response<pb::ListPoolsResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let page = v.page(
            PageRequest {
                kind: "pools",
                size: req.page_size,
                token: &req.page_token,
                filters: &[],
            },
            POOLS_PAGE,
        );
        v.check(BudgetError::Invalid)?;
        let page = page.expect("validated");
        let after = page.after.clone().unwrap_or_default();
        let mut pools = self.budget.list_pools(&after, page.fetch_limit()).await?;
        let next_page_token = page.finish(&mut pools, |p| p.pool_id.clone());
        Ok(Response::new(pb::ListPoolsResponse {
            pools: pools.iter().map(wire::pool).collect(),
            next_page_token,
        }))
    }

    async fn reserve(
        &self,
        request: Request<pb::ReserveRequest>,
    ) -> Result<Response<pb::ReserveResponse>, Status> {
        let who = Who::from(Changer::of(&request, &request.get_ref().request_id)?);
        let req = request.into_inner();
        let mut v = Violations::new();
        let cmd = parse_reserve(&req, &mut v);
        v.check(BudgetError::Invalid)?;
        let cmd = cmd.expect("validated");
        let response = self
            .budget
            .reserve(&cmd, &fingerprint("Reserve", &req), &who, |row| {
                pb::ReserveResponse {
                    reservation: Some(wire::reservation(row)),
                }
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn commit(
        &self,
        request: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        let who = Who::from(Changer::of(&request, &request.get_ref().request_id)?);
        let req = request.into_inner();
        let mut v = Violations::new();
        let request_id = v.request_id(&req.request_id);
        let reservation_id = v.text(
            "reservation_id",
            &req.reservation_id,
            RESERVATION_ID_LEN_MAX,
        );
        let amount = v.positive_money("amount", req.amount.as_ref());
        v.check(BudgetError::Invalid)?;
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
            .budget
            .commit(&cmd, &fingerprint("Commit", &req), &who, |row| {
                pb::CommitResponse {
                    reservation: Some(wire::reservation(row)),
                }
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let who = Who::from(Changer::of(&request, &request.get_ref().request_id)?);
        let req = request.into_inner();
        let mut v = Violations::new();
        let request_id = v.request_id(&req.request_id);
        let reservation_id = v.text(
            "reservation_id",
            &req.reservation_id,
            RESERVATION_ID_LEN_MAX,
        );
        let reason = v.text("reason", &req.reason, REASON_LEN_MAX);
        v.check(BudgetError::Invalid)?;
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
            .budget
            .release(&cmd, &fingerprint("Release", &req), &who, |row| {
                pb::ReleaseResponse {
                    reservation: Some(wire::reservation(row)),
                }
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn extend_reservation(
        &self,
        request: Request<pb::ExtendReservationRequest>,
    ) -> Result<Response<pb::ExtendReservationResponse>, Status> {
        let who = Who::from(Changer::of(&request, &request.get_ref().request_id)?);
        let req = request.into_inner();
        let mut v = Violations::new();
        let request_id = v.request_id(&req.request_id);
        let reservation_id = v.text(
            "reservation_id",
            &req.reservation_id,
            RESERVATION_ID_LEN_MAX,
        );
        if !(0..=HOLD_SECONDS_MAX).contains(&req.hold_seconds) {
            v.add("hold_seconds", format!("must be 0 to {HOLD_SECONDS_MAX}"));
        }
        v.check(BudgetError::Invalid)?;
        let (Some(request_id), Some(reservation_id)) = (request_id, reservation_id) else {
            unreachable!("finish() returned the violations of missing fields");
        };
        let cmd = Extend {
            request_id,
            reservation_id,
            hold_seconds: (req.hold_seconds > 0).then_some(req.hold_seconds),
        };
        let response = self
            .budget
            .extend(&cmd, &fingerprint("ExtendReservation", &req), &who, |row| {
                pb::ExtendReservationResponse {
                    reservation: Some(wire::reservation(row)),
                }
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn revoke_commitment(
        &self,
        request: Request<pb::RevokeCommitmentRequest>,
    ) -> Result<Response<pb::RevokeCommitmentResponse>, Status> {
        let who = Who::from(Changer::of(&request, &request.get_ref().request_id)?);
        let req = request.into_inner();
        let mut v = Violations::new();
        let request_id = v.request_id(&req.request_id);
        let reservation_id = v.text(
            "reservation_id",
            &req.reservation_id,
            RESERVATION_ID_LEN_MAX,
        );
        let reason = v.text("reason", &req.reason, REASON_LEN_MAX);
        v.check(BudgetError::Invalid)?;
        let (Some(request_id), Some(reservation_id), Some(reason)) =
            (request_id, reservation_id, reason)
        else {
            unreachable!("finish() returned the violations of missing fields");
        };
        let cmd = Revoke {
            request_id,
            reservation_id,
            reason,
        };
        let response = self
            .budget
            .revoke(&cmd, &fingerprint("RevokeCommitment", &req), &who, |row| {
                pb::RevokeCommitmentResponse {
                    reservation: Some(wire::reservation(row)),
                }
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn expire_reservations(
        &self,
        request: Request<pb::ExpireReservationsRequest>,
    ) -> Result<Response<pb::ExpireReservationsResponse>, Status> {
        let who = Who::from(Changer::of(&request, &request.get_ref().request_id)?);
        let req = request.into_inner();
        let mut v = Violations::new();
        let request_id = v.request_id(&req.request_id);
        let limit = match i64::from(req.limit) {
            0 => EXPIRE_LIMIT_DEFAULT,
            n if (1..=EXPIRE_LIMIT_MAX).contains(&n) => n,
            _ => {
                v.add("limit", format!("must be 0 to {EXPIRE_LIMIT_MAX}"));
                0
            }
        };
        v.check(BudgetError::Invalid)?;
        let request_id = request_id.expect("validated");
        let fingerprint = fingerprint("ExpireReservations", &req);
        let response = self
            .budget
            .expire_once(&request_id, &fingerprint, &who, limit, |expired_count| {
                pb::ExpireReservationsResponse { expired_count }
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn close_pool(
        &self,
        request: Request<pb::ClosePoolRequest>,
    ) -> Result<Response<pb::ClosePoolResponse>, Status> {
        let who = Who::from(Changer::of(&request, &request.get_ref().request_id)?);
        let req = request.into_inner();
        let mut v = Violations::new();
        let request_id = v.request_id(&req.request_id);
        let pool_id = pool_id(&mut v, "pool_id", &req.pool_id);
        let reason = v.text("reason", &req.reason, REASON_LEN_MAX);
        v.check(BudgetError::Invalid)?;
        let (Some(request_id), Some(pool_id), Some(reason)) = (request_id, pool_id, reason) else {
            unreachable!("finish() returned the violations of missing fields");
        };
        let cmd = ClosePool {
            request_id,
            pool_id,
            reason,
        };
        let response = self
            .budget
            .close_pool(&cmd, &fingerprint("ClosePool", &req), &who, |pool| {
                pb::ClosePoolResponse {
                    pool: Some(wire::pool(pool)),
                }
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn get_reservation(
        &self,
        request: Request<pb::GetReservationRequest>,
    ) -> Result<Response<pb::GetReservationResponse>, Status> {
        let tenant = tenant(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let reservation_id = v.text(
            "reservation_id",
            &req.reservation_id,
            RESERVATION_ID_LEN_MAX,
        );
        v.check(BudgetError::Invalid)?;
        let reservation_id = reservation_id.expect("validated");
        let row = self
            .budget
            .get_reservation(&reservation_id)
            .await?
            // Another tenant's reservation is not found (its existence is not confirmed).
            .filter(|row| tenant.sees(&row.beneficiary_uscc))
            .ok_or(crate::domain::Refusal::ReservationNotFound { reservation_id })
            .map_err(BudgetError::from)?;
        Ok(Response::new(pb::GetReservationResponse {
            reservation: Some(wire::reservation(&row)),
        }))
    }

    async fn list_reservations(
        &self,
        request: Request<pb::ListReservationsRequest>,
    ) -> Result<Response<pb::ListReservationsResponse>, Status> {
        let tenant = tenant(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let pool_id = pool_id(&mut v, "pool_id", &req.pool_id);
        v.optional_uscc("beneficiary_uscc", &req.beneficiary_uscc);
        let state = v.enum_value(
            "state",
            req.state,
            pb::ReservationState::Unspecified,
            wire::state_from,
        );
        let state_filter = req.state.to_string();
        let page = v.page(
            PageRequest {
                kind: "reservations",
                size: req.page_size,
                token: &req.page_token,
                filters: &[
                    &req.pool_id,
                    &req.beneficiary_uscc,
                    &req.reference,
                    &state_filter,
                ],
            },
            RESERVATIONS_PAGE,
        );
        v.check(BudgetError::Invalid)?;
        let page: Page = page.expect("validated");
        let after = page
            .after_keyset()
            .map_err(|f| BudgetError::Invalid(vec![f]))?;
        let filter = ReservationFilter {
            pool_id: pool_id.expect("validated").as_str().to_owned(),
            beneficiary_uscc: req.beneficiary_uscc.to_ascii_uppercase(),
            reference: req.reference.clone(),
            state: state.expect("validated").flatten(),
            beneficiaries: tenant
                .restriction()
                .map(|own| own.iter().cloned().collect()),
        };
        let mut rows = self
            .budget
            .list_reservations(&filter, after, page.fetch_limit())
            .await?;
        let next_page_token = page.finish(&mut rows, |r| keyset(r.created_us, &r.reservation_id));
        Ok(Response::new(pb::ListReservationsResponse {
            reservations: rows.iter().map(wire::reservation).collect(),
            next_page_token,
        }))
    }

    async fn get_beneficiary_usage(
        &self,
        request: Request<pb::GetBeneficiaryUsageRequest>,
    ) -> Result<Response<pb::GetBeneficiaryUsageResponse>, Status> {
        let tenant = tenant(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let pool_id = pool_id(&mut v, "pool_id", &req.pool_id);
        let uscc = v.uscc("beneficiary_uscc", &req.beneficiary_uscc);
        v.check(BudgetError::Invalid)?;
        let (pool_id, uscc) = (pool_id.expect("validated"), uscc.expect("validated"));
        if !tenant.sees(uscc.as_str()) {
            // An applicant asking about another enterprise learns nothing, not even the pool.
            return Err(BudgetError::PoolNotFound {
                pool_id: pool_id.to_string(),
            }
            .into());
        }
        let (usage, cap) = self
            .budget
            .usage(pool_id.as_str(), uscc.as_str())
            .await?
            .ok_or_else(|| BudgetError::PoolNotFound {
                pool_id: pool_id.to_string(),
            })?;
        Ok(Response::new(pb::GetBeneficiaryUsageResponse {
            usage: Some(wire::usage(pool_id.as_str(), uscc.as_str(), &usage, cap)),
        }))
    }

    async fn list_ledger_entries(
        &self,
        request: Request<pb::ListLedgerEntriesRequest>,
    ) -> Result<Response<pb::ListLedgerEntriesResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        v.optional_text(
            "reservation_id",
            &req.reservation_id,
            RESERVATION_ID_LEN_MAX,
        );
        v.check(BudgetError::Invalid)?;
        // Tokens of unfiltered pages stay as they were before the reservation filter existed.
        let reservation: &[&str] = if req.reservation_id.is_empty() {
            &[]
        } else {
            &[&req.reservation_id]
        };
        let (page, after) = filtered_page(
            "ledger",
            &req.pool_id,
            reservation,
            (req.page_size, &req.page_token),
            LEDGER_PAGE,
        )?;
        let mut entries = if req.reservation_id.is_empty() {
            self.budget
                .list_ledger(&req.pool_id, after, page.fetch_limit())
                .await?
        } else {
            self.budget
                .list_reservation_ledger(
                    &req.pool_id,
                    &req.reservation_id,
                    after,
                    page.fetch_limit(),
                )
                .await?
        };
        let next_page_token = page.finish(&mut entries, |e| e.entry_id.to_string());
        Ok(Response::new(pb::ListLedgerEntriesResponse {
            entries: entries.iter().map(wire::ledger_entry).collect(),
            next_page_token,
        }))
    }

    async fn create_checkpoint(
        &self,
        request: Request<pb::CreateCheckpointRequest>,
    ) -> Result<Response<pb::CreateCheckpointResponse>, Status> {
        let who = Who::from(Changer::of(&request, &request.get_ref().request_id)?);
        let req = request.into_inner();
        let mut v = Violations::new();
        let request_id = v.request_id(&req.request_id);
        let pool_id = pool_id(&mut v, "pool_id", &req.pool_id);
        v.check(BudgetError::Invalid)?;
        let (Some(request_id), Some(pool_id)) = (request_id, pool_id) else {
            unreachable!("finish() returned the violations of missing fields");
        };
        let response = self
            .budget
            .create_checkpoint(
                pool_id.as_str(),
                &request_id,
                &fingerprint("CreateCheckpoint", &req),
                &who,
                |stored, created| pb::CreateCheckpointResponse {
                    checkpoint: Some(wire::checkpoint(stored)),
                    created,
                },
            )
            .await?;
        Ok(Response::new(response))
    }

    async fn list_checkpoints(
        &self,
        request: Request<pb::ListCheckpointsRequest>,
    ) -> Result<Response<pb::ListCheckpointsResponse>, Status> {
        let req = request.into_inner();
        let (page, after) = pool_page(
            "checkpoints",
            &req.pool_id,
            (req.page_size, &req.page_token),
            CHECKPOINTS_PAGE,
        )?;
        let mut checkpoints = self
            .budget
            .list_checkpoints(&req.pool_id, after, page.fetch_limit())
            .await?;
        let next_page_token = page.finish(&mut checkpoints, |c| c.checkpoint_id.to_string());
        Ok(Response::new(pb::ListCheckpointsResponse {
            checkpoints: checkpoints.iter().map(wire::checkpoint).collect(),
            next_page_token,
        }))
    }

    async fn verify_ledger(
        &self,
        _request: Request<pb::VerifyLedgerRequest>,
    ) -> Result<Response<pb::VerifyLedgerResponse>, Status> {
        let report = self.budget.verify_ledger().await?;
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
