//! The fake budget service: pools, holds, commits and releases kept in memory, each replayable
//! by its request id (a replay returns the original answer, the same id with another request
//! is `REQUEST_ID_REUSED`), with the pool's total and the cap per beneficiary enforced and the
//! real service's codes and reasons. Enough for the application's orchestration; what the real
//! budget does with the money (ledger, expiry, races) is proven against it in `tests/`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use subsidy_common::Money;
use subsidy_proto::budget as bpb;
use subsidy_proto::budget::budget_service_server::{BudgetService, BudgetServiceServer};
use subsidy_proto::google::r#type::Money as ProtoMoney;
use subsidy_proto::status::with_reason;
use subsidy_testkit::cny;
use tonic::{Code, Request, Response, Status};

/// The error domain of the budget service.
const DOMAIN: &str = "subsidy.budget";

/// A budget service that keeps its pools and reservations in memory.
#[derive(Clone, Default)]
pub struct FakeBudget {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    pools: Vec<bpb::Pool>,
    /// In the order they were made.
    reservations: Vec<bpb::Reservation>,
    /// The answer to each request id, with the request it answered.
    answers: HashMap<String, (String, bpb::Reservation)>,
}

fn refused(code: Code, reason: &str) -> Status {
    with_reason(code, DOMAIN, reason, reason)
}

fn fen(money: &Option<ProtoMoney>) -> i64 {
    money.as_ref().map(fen_value).unwrap_or(0)
}

fn fen_value(money: &ProtoMoney) -> i64 {
    Money::from_proto(money)
        .expect("the application sends valid money")
        .fen()
}

fn now_plus(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() + seconds,
        nanos: 0,
    })
}

impl State {
    fn pool(&self, pool_id: &str) -> Result<&bpb::Pool, Status> {
        self.pools
            .iter()
            .find(|p| p.pool_id == pool_id)
            .ok_or_else(|| refused(Code::NotFound, "POOL_NOT_FOUND"))
    }

    /// What the reservations matching `keep` hold and have committed, in fen.
    fn sums(&self, keep: impl Fn(&bpb::Reservation) -> bool) -> (i64, i64) {
        self.reservations
            .iter()
            .filter(|r| keep(r))
            .fold((0, 0), |(held, committed), r| match r.state() {
                bpb::ReservationState::Held => (held + fen(&r.held_amount), committed),
                bpb::ReservationState::Committed => (held, committed + fen(&r.committed_amount)),
                _ => (held, committed),
            })
    }

    /// A pool with its counters computed from the reservations.
    fn pool_now(&self, pool_id: &str) -> Result<bpb::Pool, Status> {
        let mut pool = self.pool(pool_id)?.clone();
        let (held, committed) = self.sums(|r| r.pool_id == pool_id);
        pool.held = cny(held);
        pool.committed = cny(committed);
        pool.available = cny(fen(&pool.total) - held - committed);
        pool.reservation_count = self
            .reservations
            .iter()
            .filter(|r| r.pool_id == pool_id)
            .count() as i64;
        Ok(pool)
    }

    fn reservation_mut(&mut self, reservation_id: &str) -> Result<&mut bpb::Reservation, Status> {
        self.reservations
            .iter_mut()
            .find(|r| r.reservation_id == reservation_id)
            .ok_or_else(|| refused(Code::NotFound, "RESERVATION_NOT_FOUND"))
    }

    /// The stored answer of a replayed request, `REQUEST_ID_REUSED` for another request under
    /// the same id, or `None` for a new request.
    fn replay(&self, request_id: &str, request: &str) -> Option<Result<bpb::Reservation, Status>> {
        self.answers.get(request_id).map(|(answered, reservation)| {
            if answered == request {
                Ok(reservation.clone())
            } else {
                Err(refused(Code::AlreadyExists, "REQUEST_ID_REUSED"))
            }
        })
    }

    fn reserve(&mut self, request: &bpb::ReserveRequest) -> Result<bpb::Reservation, Status> {
        let pool = self.pool_now(&request.pool_id)?;
        let amount = fen(&request.amount);
        if amount > fen(&pool.available) {
            return Err(refused(Code::FailedPrecondition, "POOL_EXHAUSTED"));
        }
        if let Some(cap) = pool.beneficiary_cap.as_ref().map(fen_value) {
            let (held, committed) = self.sums(|r| {
                r.pool_id == request.pool_id && r.beneficiary_uscc == request.beneficiary_uscc
            });
            if held + committed + amount > cap {
                return Err(refused(
                    Code::FailedPrecondition,
                    "BENEFICIARY_CAP_EXCEEDED",
                ));
            }
        }
        let hold_seconds = match request.hold_seconds {
            0 => pool.default_hold_seconds,
            seconds => seconds,
        };
        let reservation = bpb::Reservation {
            reservation_id: format!("fake-reservation-{}", self.reservations.len() + 1),
            pool_id: request.pool_id.clone(),
            beneficiary_uscc: request.beneficiary_uscc.clone(),
            reference: request.reference.clone(),
            state: bpb::ReservationState::Held as i32,
            held_amount: cny(amount),
            committed_amount: cny(0),
            released_amount: cny(0),
            create_time: now_plus(0),
            expire_time: now_plus(hold_seconds),
            ..Default::default()
        };
        self.reservations.push(reservation.clone());
        Ok(reservation)
    }

    fn commit(&mut self, request: &bpb::CommitRequest) -> Result<bpb::Reservation, Status> {
        let reservation = self.reservation_mut(&request.reservation_id)?;
        if reservation.state() != bpb::ReservationState::Held {
            return Err(refused(Code::FailedPrecondition, "RESERVATION_NOT_HELD"));
        }
        let (held, amount) = (fen(&reservation.held_amount), fen(&request.amount));
        if amount > held {
            return Err(refused(Code::FailedPrecondition, "COMMIT_EXCEEDS_HOLD"));
        }
        reservation.state = bpb::ReservationState::Committed as i32;
        reservation.committed_amount = cny(amount);
        reservation.released_amount = cny(held - amount);
        reservation.settle_time = now_plus(0);
        Ok(reservation.clone())
    }

    fn release(&mut self, request: &bpb::ReleaseRequest) -> Result<bpb::Reservation, Status> {
        let reservation = self.reservation_mut(&request.reservation_id)?;
        if reservation.state() != bpb::ReservationState::Held {
            return Err(refused(Code::FailedPrecondition, "RESERVATION_NOT_HELD"));
        }
        reservation.state = bpb::ReservationState::Released as i32;
        reservation.released_amount = reservation.held_amount.clone();
        reservation.release_reason = request.reason.clone();
        reservation.settle_time = now_plus(0);
        Ok(reservation.clone())
    }

    fn extend(
        &mut self,
        request: &bpb::ExtendReservationRequest,
    ) -> Result<bpb::Reservation, Status> {
        let reservation = self.reservation_mut(&request.reservation_id)?;
        if reservation.state() != bpb::ReservationState::Held {
            return Err(refused(Code::FailedPrecondition, "RESERVATION_NOT_HELD"));
        }
        let seconds = request.hold_seconds.max(1);
        let later = now_plus(seconds);
        let current = reservation.expire_time.as_ref().map(|t| t.seconds);
        if current < later.as_ref().map(|t| t.seconds) {
            reservation.expire_time = later;
        }
        Ok(reservation.clone())
    }

    fn revoke(
        &mut self,
        request: &bpb::RevokeCommitmentRequest,
    ) -> Result<bpb::Reservation, Status> {
        let reservation = self.reservation_mut(&request.reservation_id)?;
        if reservation.state() != bpb::ReservationState::Committed {
            return Err(refused(
                Code::FailedPrecondition,
                "RESERVATION_NOT_COMMITTED",
            ));
        }
        reservation.state = bpb::ReservationState::Revoked as i32;
        reservation.revoked_amount = reservation.committed_amount.take();
        reservation.committed_amount = cny(0);
        reservation.released_amount = reservation.held_amount.clone();
        reservation.revoke_reason = request.reason.clone();
        reservation.revoke_time = now_plus(0);
        Ok(reservation.clone())
    }
}

impl FakeBudget {
    /// The routes that serve this fake (share its state with the handle).
    pub fn routes(&self) -> tonic::service::Routes {
        tonic::service::Routes::new(BudgetServiceServer::new(self.clone()))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("the fake budget never panics holding its lock")
    }

    /// Answers a money-moving request once per request id: `act` the first time, the stored
    /// answer on a replay.
    fn once<R: std::fmt::Debug>(
        &self,
        request_id: &str,
        request: &R,
        act: impl FnOnce(&mut State, &R) -> Result<bpb::Reservation, Status>,
    ) -> Result<bpb::Reservation, Status> {
        let mut state = self.state();
        let fingerprint = format!("{request:?}");
        if let Some(answer) = state.replay(request_id, &fingerprint) {
            return answer;
        }
        let reservation = act(&mut state, request)?;
        state
            .answers
            .insert(request_id.to_owned(), (fingerprint, reservation.clone()));
        Ok(reservation)
    }
}

fn unsupported(what: &str) -> Status {
    Status::unimplemented(format!("the fake budget does not {what}"))
}

#[tonic::async_trait]
impl BudgetService for FakeBudget {
    async fn create_pool(
        &self,
        request: Request<bpb::CreatePoolRequest>,
    ) -> Result<Response<bpb::CreatePoolResponse>, Status> {
        let request = request.into_inner();
        let mut state = self.state();
        if state.pool(&request.pool_id).is_ok() {
            return Err(refused(Code::AlreadyExists, "POOL_ALREADY_EXISTS"));
        }
        state.pools.push(bpb::Pool {
            pool_id: request.pool_id.clone(),
            display_name: request.display_name,
            total: request.total,
            beneficiary_cap: request.beneficiary_cap,
            reservation_cap: request.reservation_cap,
            default_hold_seconds: request.default_hold_seconds,
            create_time: now_plus(0),
            ..Default::default()
        });
        let pool = Some(state.pool_now(&request.pool_id)?);
        Ok(Response::new(bpb::CreatePoolResponse { pool }))
    }

    async fn get_pool(
        &self,
        request: Request<bpb::GetPoolRequest>,
    ) -> Result<Response<bpb::GetPoolResponse>, Status> {
        let pool = Some(self.state().pool_now(&request.into_inner().pool_id)?);
        Ok(Response::new(bpb::GetPoolResponse { pool }))
    }

    async fn list_pools(
        &self,
        _request: Request<bpb::ListPoolsRequest>,
    ) -> Result<Response<bpb::ListPoolsResponse>, Status> {
        Err(unsupported("list pools"))
    }

    async fn reserve(
        &self,
        request: Request<bpb::ReserveRequest>,
    ) -> Result<Response<bpb::ReserveResponse>, Status> {
        let request = request.into_inner();
        let reservation = Some(self.once(&request.request_id, &request, State::reserve)?);
        Ok(Response::new(bpb::ReserveResponse { reservation }))
    }

    async fn commit(
        &self,
        request: Request<bpb::CommitRequest>,
    ) -> Result<Response<bpb::CommitResponse>, Status> {
        let request = request.into_inner();
        let reservation = Some(self.once(&request.request_id, &request, State::commit)?);
        Ok(Response::new(bpb::CommitResponse { reservation }))
    }

    async fn release(
        &self,
        request: Request<bpb::ReleaseRequest>,
    ) -> Result<Response<bpb::ReleaseResponse>, Status> {
        let request = request.into_inner();
        let reservation = Some(self.once(&request.request_id, &request, State::release)?);
        Ok(Response::new(bpb::ReleaseResponse { reservation }))
    }

    async fn extend_reservation(
        &self,
        request: Request<bpb::ExtendReservationRequest>,
    ) -> Result<Response<bpb::ExtendReservationResponse>, Status> {
        let request = request.into_inner();
        let reservation = Some(self.once(&request.request_id, &request, State::extend)?);
        Ok(Response::new(bpb::ExtendReservationResponse {
            reservation,
        }))
    }

    async fn revoke_commitment(
        &self,
        request: Request<bpb::RevokeCommitmentRequest>,
    ) -> Result<Response<bpb::RevokeCommitmentResponse>, Status> {
        let request = request.into_inner();
        let reservation = Some(self.once(&request.request_id, &request, State::revoke)?);
        Ok(Response::new(bpb::RevokeCommitmentResponse { reservation }))
    }

    async fn expire_reservations(
        &self,
        _request: Request<bpb::ExpireReservationsRequest>,
    ) -> Result<Response<bpb::ExpireReservationsResponse>, Status> {
        Err(unsupported("expire holds"))
    }

    async fn get_reservation(
        &self,
        request: Request<bpb::GetReservationRequest>,
    ) -> Result<Response<bpb::GetReservationResponse>, Status> {
        let reservation_id = request.into_inner().reservation_id;
        let reservation = Some(self.state().reservation_mut(&reservation_id)?.clone());
        Ok(Response::new(bpb::GetReservationResponse { reservation }))
    }

    async fn list_reservations(
        &self,
        request: Request<bpb::ListReservationsRequest>,
    ) -> Result<Response<bpb::ListReservationsResponse>, Status> {
        let request = request.into_inner();
        let matches = |wanted: &str, value: &str| wanted.is_empty() || wanted == value;
        let reservations = self
            .state()
            .reservations
            .iter()
            .filter(|r| {
                matches(&request.pool_id, &r.pool_id)
                    && matches(&request.beneficiary_uscc, &r.beneficiary_uscc)
                    && matches(&request.reference, &r.reference)
                    && (request.state() == bpb::ReservationState::Unspecified
                        || request.state == r.state)
            })
            .cloned()
            .collect();
        Ok(Response::new(bpb::ListReservationsResponse {
            reservations,
            next_page_token: String::new(),
        }))
    }

    async fn get_beneficiary_usage(
        &self,
        request: Request<bpb::GetBeneficiaryUsageRequest>,
    ) -> Result<Response<bpb::GetBeneficiaryUsageResponse>, Status> {
        let request = request.into_inner();
        let state = self.state();
        let cap = state.pool(&request.pool_id)?.beneficiary_cap.clone();
        let (held, committed) = state.sums(|r| {
            r.pool_id == request.pool_id && r.beneficiary_uscc == request.beneficiary_uscc
        });
        let remaining = cap
            .as_ref()
            .and_then(|c| cny(fen_value(c) - held - committed));
        Ok(Response::new(bpb::GetBeneficiaryUsageResponse {
            usage: Some(bpb::BeneficiaryUsage {
                pool_id: request.pool_id,
                beneficiary_uscc: request.beneficiary_uscc,
                held: cny(held),
                committed: cny(committed),
                cap,
                remaining,
            }),
        }))
    }

    async fn list_ledger_entries(
        &self,
        _request: Request<bpb::ListLedgerEntriesRequest>,
    ) -> Result<Response<bpb::ListLedgerEntriesResponse>, Status> {
        Err(unsupported("keep a ledger"))
    }

    async fn verify_ledger(
        &self,
        _request: Request<bpb::VerifyLedgerRequest>,
    ) -> Result<Response<bpb::VerifyLedgerResponse>, Status> {
        Err(unsupported("keep a ledger"))
    }
}
