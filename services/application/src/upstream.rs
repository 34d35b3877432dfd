//! Clients of the rules, budget and notification services. Every outgoing call carries the
//! caller's W3C trace context (through [`TracePropagation`]) and a deadline; every failure is
//! classified once, here, as either "the peer is not there" (retry later, with the same derived
//! request id) or a definitive answer the workflow acts on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use subsidy_common::config::Config;

use crate::settings::Settings;
use subsidy_common::security::{PeerChannel, Security};
use subsidy_common::{BoxError, Money, RequestId};
use subsidy_proto::budget::budget_service_client::BudgetServiceClient;
use subsidy_proto::notification::notification_service_client::NotificationServiceClient;
use subsidy_proto::rules::rules_service_client::RulesServiceClient;
use subsidy_proto::{budget as bpb, notification as npb, rules as rpb};
use tonic::Code;

use crate::domain::ClaimShortfall;
use crate::error::ApplicationError;

/// The rules service's policy identifier of the compute-voucher program.
pub const COMPUTE_VOUCHER_POLICY_ID: &str = "compute-voucher";

type Traced = PeerChannel;

/// How a peer answered a call that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerError {
    /// The peer could not be reached, timed out, is not serving this RPC yet, or its storage
    /// is down: nothing is known to have happened; retry with the same request id.
    Unavailable(&'static str),
    /// The peer refused definitively with a status code and an `ErrorInfo` reason.
    Refused {
        /// The peer.
        service: &'static str,
        /// The status code.
        code: Code,
        /// The `ErrorInfo` reason, or empty.
        reason: String,
    },
}

impl PeerError {
    /// The refusal's reason, if this is a refusal.
    pub fn reason(&self) -> Option<&str> {
        match self {
            PeerError::Refused { reason, .. } => Some(reason),
            PeerError::Unavailable(_) => None,
        }
    }
}

impl From<PeerError> for ApplicationError {
    /// A refusal the workflow did not handle is unexpected: a bug on one side.
    fn from(error: PeerError) -> Self {
        match error {
            PeerError::Unavailable(service) => ApplicationError::UpstreamUnavailable(service),
            PeerError::Refused {
                service,
                code,
                reason,
            } => ApplicationError::UpstreamUnexpected {
                service,
                code: format!("{code:?}"),
                reason,
            },
        }
    }
}

/// Classifies a status of `service`.
pub fn classify(service: &'static str, status: &tonic::Status) -> PeerError {
    use std::error::Error as _;
    let reason = subsidy_proto::status::reason(status).unwrap_or_default();
    // A status made by this side's transport (the connection closed under the call, or the
    // peer's GOAWAY refused its stream while it drained or aged out its connection) never
    // reached the peer's service, whatever its code (tonic reports some as INTERNAL).
    let mut transport = false;
    let mut cause = status.source();
    while let Some(error) = cause {
        transport |= error.downcast_ref::<tonic::transport::Error>().is_some()
            || error
                .downcast_ref::<subsidy_common::balance::TransportError>()
                .is_some();
        cause = error.source();
    }
    let transient = transport
        || matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Unimplemented
    ) || reason == "STORAGE_UNAVAILABLE"
        // No policy is published yet: an operator's step away, not a verdict on the input.
        || reason == "NO_POLICY_PUBLISHED";
    if transient {
        PeerError::Unavailable(service)
    } else {
        PeerError::Refused {
            service,
            code: status.code(),
            reason,
        }
    }
}

fn request<T>(message: T) -> tonic::Request<T> {
    // Who acts is the mutual-TLS identity of this service, and the person it acts for is
    // added by the channel (`security::PeerCall`).
    tonic::Request::new(message)
}

/// The page size asked of `ListLedgerEntries`: its maximum.
const LEDGER_PAGE_SIZE: i32 = 1000;

/// The three peers.
#[derive(Clone, Debug)]
pub struct Peers {
    rules: RulesServiceClient<Traced>,
    budget: BudgetServiceClient<Traced>,
    notification: NotificationServiceClient<Traced>,
    shortfall_by_version: Arc<Mutex<HashMap<String, ClaimShortfall>>>,
}

impl Peers {
    /// Lazily connecting clients of the configured peers.
    pub fn connect(
        config: &Config,
        settings: &Settings,
        security: &Security,
    ) -> Result<Peers, BoxError> {
        let timeout = Duration::from_millis(settings.upstream_timeout_ms);
        let resolve = (config.peers.resolve_interval_ms > 0)
            .then(|| Duration::from_millis(config.peers.resolve_interval_ms));
        let channel = |url: &str| -> Result<Traced, BoxError> {
            security.peer_channel(url, timeout, resolve)
        };
        let limit = config.server.message_size_max_bytes;
        Ok(Peers {
            rules: RulesServiceClient::new(channel(&config.peers.rules_url)?)
                .max_decoding_message_size(limit),
            budget: BudgetServiceClient::new(channel(&config.peers.budget_url)?)
                .max_decoding_message_size(limit),
            notification: NotificationServiceClient::new(channel(&config.peers.notification_url)?)
                .max_decoding_message_size(limit),
            shortfall_by_version: Arc::default(),
        })
    }

    // ---------------------------------------------------------------------------------------
    // Rules
    // ---------------------------------------------------------------------------------------

    /// Evaluates a compute-voucher claim.
    pub async fn evaluate_compute_voucher(
        &self,
        claim: rpb::ComputeVoucherClaim,
        policy_version: &str,
    ) -> Result<rpb::Decision, PeerError> {
        let answer = self
            .rules
            .clone()
            .evaluate_compute_voucher(request(rpb::EvaluateComputeVoucherRequest {
                claim: Some(claim),
                policy_version: policy_version.to_owned(),
            }))
            .await
            .map_err(|status| classify("rules", &status))?;
        answer
            .into_inner()
            .decision
            .ok_or_else(|| missing("rules", "decision"))
    }

    /// Evaluates a data-infrastructure proposal.
    pub async fn evaluate_data_infra(
        &self,
        proposal: rpb::DataInfraProposal,
    ) -> Result<rpb::Decision, PeerError> {
        let answer = self
            .rules
            .clone()
            .evaluate_data_infra_proposal(request(rpb::EvaluateDataInfraProposalRequest {
                proposal: Some(proposal),
                policy_version: String::new(),
            }))
            .await
            .map_err(|status| classify("rules", &status))?;
        answer
            .into_inner()
            .decision
            .ok_or_else(|| missing("rules", "decision"))
    }

    /// Ranks a selection round.
    pub async fn rank(
        &self,
        ranking: rpb::RankSelectionRoundRequest,
    ) -> Result<rpb::RankSelectionRoundResponse, PeerError> {
        Ok(self
            .rules
            .clone()
            .rank_selection_round(request(ranking))
            .await
            .map_err(|status| classify("rules", &status))?
            .into_inner())
    }

    /// The shortfall mode of a compute-voucher policy version (published versions are
    /// immutable, so the answer is cached).
    pub async fn claim_shortfall(&self, policy_version: &str) -> Result<ClaimShortfall, PeerError> {
        if let Some(mode) = self
            .shortfall_by_version
            .lock()
            .expect("the cache lock is never poisoned")
            .get(policy_version)
        {
            return Ok(*mode);
        }
        let policy = self
            .rules
            .clone()
            .get_policy(request(rpb::GetPolicyRequest {
                policy_id: COMPUTE_VOUCHER_POLICY_ID.to_owned(),
                version: policy_version.to_owned(),
            }))
            .await
            .map_err(|status| classify("rules", &status))?
            .into_inner()
            .policy
            .ok_or_else(|| missing("rules", "policy"))?;
        let mode = match policy.parameters.and_then(|p| p.program_parameters) {
            Some(rpb::policy_parameters::ProgramParameters::ComputeVoucher(parameters))
                if parameters.shortfall_mode() == rpb::ShortfallMode::Partial =>
            {
                ClaimShortfall::Partial
            }
            _ => ClaimShortfall::Waitlist,
        };
        if !policy_version.is_empty() {
            self.shortfall_by_version
                .lock()
                .expect("the cache lock is never poisoned")
                .insert(policy_version.to_owned(), mode);
        }
        Ok(mode)
    }

    /// The publicity period (公示期) of an award of `program` made at `start_us` under
    /// `policy_version` (empty: the version in effect that day), as the rules service counts it
    /// on its working-day calendar.
    pub async fn publicity_period(
        &self,
        program: rpb::Program,
        start_us: i64,
        policy_version: &str,
    ) -> Result<rpb::GetPublicityPeriodResponse, PeerError> {
        Ok(self
            .rules
            .clone()
            .get_publicity_period(request(rpb::GetPublicityPeriodRequest {
                program: program as i32,
                start_time: Some(subsidy_common::edge::timestamp(start_us)),
                policy_version: policy_version.to_owned(),
            }))
            .await
            .map_err(|status| classify("rules", &status))?
            .into_inner())
    }

    // ---------------------------------------------------------------------------------------
    // Budget
    // ---------------------------------------------------------------------------------------

    /// What a beneficiary holds plus has committed in a pool.
    pub async fn usage(&self, pool_id: &str, uscc: &str) -> Result<Money, PeerError> {
        let usage = self
            .budget
            .clone()
            .get_beneficiary_usage(request(bpb::GetBeneficiaryUsageRequest {
                pool_id: pool_id.to_owned(),
                beneficiary_uscc: uscc.to_owned(),
            }))
            .await
            .map_err(|status| classify("budget", &status))?
            .into_inner()
            .usage
            .ok_or_else(|| missing("budget", "usage"))?;
        let held = money("budget", &usage.held)?;
        let committed = money("budget", &usage.committed)?;
        held.checked_add(committed)
            .ok_or_else(|| missing("budget", "usage within range"))
    }

    /// A pool.
    pub async fn pool(&self, pool_id: &str) -> Result<bpb::Pool, PeerError> {
        self.budget
            .clone()
            .get_pool(request(bpb::GetPoolRequest {
                pool_id: pool_id.to_owned(),
            }))
            .await
            .map_err(|status| classify("budget", &status))?
            .into_inner()
            .pool
            .ok_or_else(|| missing("budget", "pool"))
    }

    /// What a pool has available.
    pub async fn available(&self, pool_id: &str) -> Result<Money, PeerError> {
        let pool = self.pool(pool_id).await?;
        money("budget", &pool.available)
    }

    /// Holds money.
    pub async fn reserve(
        &self,
        request_id: &RequestId,
        pool_id: &str,
        beneficiary: &str,
        amount: Money,
        reference: &str,
        hold_seconds: i64,
    ) -> Result<bpb::Reservation, PeerError> {
        self.budget
            .clone()
            .reserve(request(bpb::ReserveRequest {
                request_id: request_id.to_string(),
                pool_id: pool_id.to_owned(),
                beneficiary_uscc: beneficiary.to_owned(),
                amount: Some(amount.to_proto()),
                reference: reference.to_owned(),
                hold_seconds,
            }))
            .await
            .map_err(|status| classify("budget", &status))?
            .into_inner()
            .reservation
            .ok_or_else(|| missing("budget", "reservation"))
    }

    /// Commits a hold for `amount`.
    pub async fn commit(
        &self,
        request_id: &RequestId,
        reservation_id: &str,
        amount: Money,
    ) -> Result<bpb::Reservation, PeerError> {
        self.budget
            .clone()
            .commit(request(bpb::CommitRequest {
                request_id: request_id.to_string(),
                reservation_id: reservation_id.to_owned(),
                amount: Some(amount.to_proto()),
            }))
            .await
            .map_err(|status| classify("budget", &status))?
            .into_inner()
            .reservation
            .ok_or_else(|| missing("budget", "reservation"))
    }

    /// Releases a hold.
    pub async fn release(
        &self,
        request_id: &RequestId,
        reservation_id: &str,
        reason: &str,
    ) -> Result<bpb::Reservation, PeerError> {
        self.budget
            .clone()
            .release(request(bpb::ReleaseRequest {
                request_id: request_id.to_string(),
                reservation_id: reservation_id.to_owned(),
                reason: reason.to_owned(),
            }))
            .await
            .map_err(|status| classify("budget", &status))?
            .into_inner()
            .reservation
            .ok_or_else(|| missing("budget", "reservation"))
    }

    /// Extends a held reservation to `hold_seconds` from now (0: the pool's default); the
    /// budget never shortens a hold, and answers `RESERVATION_NOT_HELD` for one that is not
    /// held.
    pub async fn extend_reservation(
        &self,
        request_id: &RequestId,
        reservation_id: &str,
        hold_seconds: i64,
    ) -> Result<bpb::Reservation, PeerError> {
        self.budget
            .clone()
            .extend_reservation(request(bpb::ExtendReservationRequest {
                request_id: request_id.to_string(),
                reservation_id: reservation_id.to_owned(),
                hold_seconds,
            }))
            .await
            .map_err(|status| classify("budget", &status))?
            .into_inner()
            .reservation
            .ok_or_else(|| missing("budget", "reservation"))
    }

    /// Revokes a committed reservation: its commitment returns to the pool (the budget
    /// answers `RESERVATION_NOT_COMMITTED` for one that is not committed).
    pub async fn revoke_commitment(
        &self,
        request_id: &RequestId,
        reservation_id: &str,
        reason: &str,
    ) -> Result<bpb::Reservation, PeerError> {
        self.budget
            .clone()
            .revoke_commitment(request(bpb::RevokeCommitmentRequest {
                request_id: request_id.to_string(),
                reservation_id: reservation_id.to_owned(),
                reason: reason.to_owned(),
            }))
            .await
            .map_err(|status| classify("budget", &status))?
            .into_inner()
            .reservation
            .ok_or_else(|| missing("budget", "reservation"))
    }

    /// One reservation.
    pub async fn reservation(&self, reservation_id: &str) -> Result<bpb::Reservation, PeerError> {
        self.budget
            .clone()
            .get_reservation(request(bpb::GetReservationRequest {
                reservation_id: reservation_id.to_owned(),
            }))
            .await
            .map_err(|status| classify("budget", &status))?
            .into_inner()
            .reservation
            .ok_or_else(|| missing("budget", "reservation"))
    }

    /// The HELD reservations of a pool made with `reference` (at most one page: an application
    /// holds at most a handful).
    pub async fn held_by_reference(
        &self,
        pool_id: &str,
        reference: &str,
    ) -> Result<Vec<bpb::Reservation>, PeerError> {
        Ok(self
            .budget
            .clone()
            .list_reservations(request(bpb::ListReservationsRequest {
                pool_id: pool_id.to_owned(),
                beneficiary_uscc: String::new(),
                reference: reference.to_owned(),
                state: bpb::ReservationState::Held as i32,
                page_size: 0,
                page_token: String::new(),
            }))
            .await
            .map_err(|status| classify("budget", &status))?
            .into_inner()
            .reservations)
    }

    /// The sequence numbers of the ledger entries of reservation `reservation_id` in pool
    /// `pool_id`, in ledger order: the budget's entries of that reservation alone, page by page
    /// (the largest page the budget serves; a reservation has a handful of entries).
    pub async fn reservation_ledger_sequences(
        &self,
        pool_id: &str,
        reservation_id: &str,
    ) -> Result<Vec<i64>, PeerError> {
        let mut sequences = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .budget
                .clone()
                .list_ledger_entries(request(bpb::ListLedgerEntriesRequest {
                    pool_id: pool_id.to_owned(),
                    page_size: LEDGER_PAGE_SIZE,
                    page_token,
                    reservation_id: reservation_id.to_owned(),
                }))
                .await
                .map_err(|status| classify("budget", &status))?
                .into_inner();
            sequences.extend(page.entries.iter().map(|entry| entry.sequence));
            if page.next_page_token.is_empty() {
                return Ok(sequences);
            }
            page_token = page.next_page_token;
        }
    }

    // ---------------------------------------------------------------------------------------
    // Notification
    // ---------------------------------------------------------------------------------------

    /// Publishes one event (idempotent by its `event_id`).
    pub async fn publish(&self, event: npb::Event) -> Result<(), PeerError> {
        self.notification
            .clone()
            .publish_event(request(npb::PublishEventRequest { event: Some(event) }))
            .await
            .map_err(|status| classify("notification", &status))?;
        Ok(())
    }

    /// Publishes `events` in one call, all or nothing (each idempotent by its `event_id`).
    pub async fn publish_all(&self, events: Vec<npb::Event>) -> Result<(), PeerError> {
        let count = events.len();
        let response = self
            .notification
            .clone()
            .publish_events(request(npb::PublishEventsRequest { events }))
            .await
            .map_err(|status| classify("notification", &status))?
            .into_inner();
        if response.results.len() != count {
            return Err(missing("notification", "result for every event"));
        }
        Ok(())
    }
}

fn missing(service: &'static str, what: &str) -> PeerError {
    PeerError::Refused {
        service,
        code: Code::Internal,
        reason: format!("RESPONSE_WITHOUT_{}", what.to_uppercase().replace(' ', "_")),
    }
}

/// Parses a peer's amount; a malformed one is the peer's bug.
pub fn money(
    service: &'static str,
    value: &Option<subsidy_proto::google::r#type::Money>,
) -> Result<Money, PeerError> {
    value
        .as_ref()
        .map(Money::from_proto)
        .transpose()
        .map_err(|_| missing(service, "valid amount"))
        .map(|money| money.unwrap_or(Money::ZERO))
}
