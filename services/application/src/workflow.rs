//! The orchestration of claims, proposals and rounds across the rules, budget and notification
//! services.
//!
//! Every transition is one transaction over the application's row, its history and the outbox.
//! A step that calls another service is split so that a crash at any point converges:
//! 1. the intent (amount, attempt) is recorded in the row first;
//! 2. the peer is called with a request id derived from the application and the step, so a
//!    repeated call is answered from the peer's idempotency store instead of acting twice;
//! 3. the outcome is recorded in a transaction that checks the intent is still current; an
//!    outcome that arrives for an application that moved on (a withdrawal raced the call) is
//!    compensated (the hold is released).
//!
//! The reconciler runs the same steps for rows whose step is older than the grace period, so
//! calls that failed with UNAVAILABLE, and processes that died mid-step, are finished.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{Datelike, FixedOffset, NaiveDate};
use prost::Message;
use subsidy_common::db::{DbError, timestamp_from_us};
use subsidy_common::{Money, RequestId, Uscc};
use subsidy_proto::application as pb;
use subsidy_proto::budget as bpb;
use subsidy_proto::notification as npb;
use subsidy_proto::rules as rpb;
use tokio::sync::Notify;

use crate::domain::{
    ApplicationError, BenefitRating, ClaimShortfall, ClaimState, FundingPlan, PROPOSAL_SCORES_MAX,
    ProposalCategory, ProposalState, ROUND_PROPOSALS_MAX, RejectionReason, RoundState,
    SYSTEM_ACTOR, approved_amount, plan_funding, rate_basis_points,
};
use crate::grpc::{claim_to_proto, proposal_to_proto, round_to_proto};
use crate::storage::{
    ClaimRow, EnterpriseRow, HistoryRow, ProposalRow, RequestStatus, RoundRow, ScoreRow, Store, Tx,
};
use crate::upstream::{PeerError, Peers, money};

/// Most steps one drive of a claim takes (evaluate, fund, reserve, re-evaluate after a
/// concurrent cap change, …) before leaving the rest to the reconciler.
pub const CLAIM_STEPS_MAX: usize = 8;
/// Most waitlisted claims served by one promotion pass.
pub const PROMOTIONS_PER_PASS_MAX: usize = 100;
/// Most rows the reconciler takes up per kind and tick.
pub const RECONCILE_BATCH_MAX: i64 = 100;
/// Most events the relay sends per batch.
pub const RELAY_BATCH_MAX: i64 = 100;
/// Longest pause of the relay after failed deliveries, in milliseconds.
pub const RELAY_BACKOFF_MS_MAX: u64 = 5_000;
/// The producer name in every event.
pub const EVENT_SOURCE: &str = "subsidy.application";
/// Hex digits of the ranking digest kept in a round's ranking identifier.
const RANKING_ID_HEX_LEN: usize = 32;
/// Asia/Shanghai's offset from UTC, in seconds (no daylight saving).
const SHANGHAI_OFFSET_SECONDS: i32 = 8 * 3600;

/// Operation names of the request log.
pub mod op {
    /// RegisterEnterprise.
    pub const REGISTER_ENTERPRISE: &str = "RegisterEnterprise";
    /// UpdateEnterpriseContact.
    pub const UPDATE_CONTACT: &str = "UpdateEnterpriseContact";
    /// SubmitClaim.
    pub const SUBMIT_CLAIM: &str = "SubmitClaim";
    /// ApproveClaim.
    pub const APPROVE_CLAIM: &str = "ApproveClaim";
    /// RejectClaim.
    pub const REJECT_CLAIM: &str = "RejectClaim";
    /// WithdrawClaim.
    pub const WITHDRAW_CLAIM: &str = "WithdrawClaim";
    /// RecordClaimDisbursement.
    pub const DISBURSE_CLAIM: &str = "RecordClaimDisbursement";
    /// CreateSelectionRound.
    pub const CREATE_ROUND: &str = "CreateSelectionRound";
    /// CloseSelectionRound.
    pub const CLOSE_ROUND: &str = "CloseSelectionRound";
    /// SubmitProposal.
    pub const SUBMIT_PROPOSAL: &str = "SubmitProposal";
    /// WithdrawProposal.
    pub const WITHDRAW_PROPOSAL: &str = "WithdrawProposal";
    /// ScoreProposal.
    pub const SCORE_PROPOSAL: &str = "ScoreProposal";
    /// FinalizeSelectionRound.
    pub const FINALIZE_ROUND: &str = "FinalizeSelectionRound";
    /// RecordProposalDisbursement.
    pub const DISBURSE_PROPOSAL: &str = "RecordProposalDisbursement";
}

/// Settings of the workflow.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Pool funding compute-voucher claims.
    pub compute_voucher_pool_id: String,
    /// Hold lifetime of a claim's reservation, seconds; 0 for the pool's default.
    pub hold_seconds: i64,
    /// Age a step must reach before the reconciler takes it over, µs.
    pub reconcile_grace_us: i64,
}

/// Who asks, and with which request.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The idempotency key.
    pub request_id: RequestId,
    /// The request's fingerprint.
    pub fingerprint: String,
    /// The caller's identity.
    pub actor: String,
}

/// A validated enterprise registration.
#[derive(Clone, Debug)]
pub struct RegisterEnterprise {
    /// USCC.
    pub uscc: Uscc,
    /// Name.
    pub name: String,
    /// E-mail.
    pub contact_email: String,
    /// Telephone or empty.
    pub contact_phone: String,
    /// Division code.
    pub registration_division_code: String,
}

/// A validated claim submission.
#[derive(Clone, Debug)]
pub struct SubmitClaim {
    /// The buyer.
    pub enterprise: Uscc,
    /// The seller.
    pub seller: Uscc,
    /// The contract total.
    pub total: Money,
    /// The contract as it will be stored (USCC upper-cased).
    pub contract: pb::ComputeContract,
}

/// A validated approval.
#[derive(Clone, Debug)]
pub struct ApproveClaim {
    /// Claim.
    pub claim_id: String,
    /// Verified invoiced and paid amount.
    pub verified: Money,
    /// Rating.
    pub rating: BenefitRating,
    /// Reviewer.
    pub reviewer_id: String,
    /// Note.
    pub note: String,
}

/// A validated rejection.
#[derive(Clone, Debug)]
pub struct RejectClaim {
    /// Claim.
    pub claim_id: String,
    /// Reason.
    pub reason: RejectionReason,
    /// Note.
    pub note: String,
    /// Reviewer.
    pub reviewer_id: String,
}

/// A validated payment record.
#[derive(Clone, Debug)]
pub struct Disbursement {
    /// Claim or proposal.
    pub id: String,
    /// Payment reference.
    pub payment_reference: String,
    /// Payment date.
    pub payment_date: NaiveDate,
    /// Amount paid.
    pub amount: Money,
}

/// A validated round creation.
#[derive(Clone, Debug)]
pub struct CreateRound {
    /// Pool.
    pub pool_id: String,
    /// Title.
    pub title: String,
    /// Deadline, µs.
    pub deadline_us: i64,
}

/// A validated proposal submission.
#[derive(Clone, Debug)]
pub struct SubmitProposal {
    /// Round.
    pub round_id: String,
    /// Applicant.
    pub applicant: Uscc,
    /// Category.
    pub category: ProposalCategory,
    /// Title.
    pub title: String,
    /// Requested amount.
    pub requested: Money,
    /// Summary.
    pub summary: String,
    /// Attachment digests.
    pub attachments: Vec<pb::AttachmentDigest>,
}

/// A validated score.
#[derive(Clone, Debug)]
pub struct ScoreProposal {
    /// Proposal.
    pub proposal_id: String,
    /// Expert.
    pub expert_id: String,
    /// Expert's organisation.
    pub expert_organization: Uscc,
    /// Score.
    pub score: u32,
    /// Comment.
    pub comment: String,
}

/// One state change to record with a history entry.
struct Change<'a> {
    from: Option<&'a str>,
    to: &'a str,
    actor: &'a str,
    reason: String,
    request_id: &'a str,
}

/// An event to append to the outbox.
struct EventSpec {
    event_type: npb::EventType,
    program: npb::Program,
    application_id: String,
    enterprise_uscc: String,
    round_id: String,
    amount: Option<Money>,
    details: Vec<(&'static str, String)>,
}

impl EventSpec {
    fn claim(event_type: npb::EventType, claim: &ClaimRow, amount: Option<Money>) -> Self {
        EventSpec {
            event_type,
            program: npb::Program::ComputeVoucher,
            application_id: claim.claim_id.clone(),
            enterprise_uscc: claim.enterprise_uscc.clone(),
            round_id: String::new(),
            amount,
            details: vec![
                ("state", claim.state.as_str().to_owned()),
                ("contract_number", claim.contract_number.clone()),
            ],
        }
    }

    fn proposal(event_type: npb::EventType, proposal: &ProposalRow, amount: Option<Money>) -> Self {
        EventSpec {
            event_type,
            program: npb::Program::DataInfra,
            application_id: proposal.proposal_id.clone(),
            enterprise_uscc: proposal.applicant_uscc.clone(),
            round_id: proposal.round_id.clone(),
            amount,
            details: vec![
                ("state", proposal.state.as_str().to_owned()),
                ("title", proposal.title.clone()),
            ],
        }
    }

    fn with(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.details.push((key, value.into()));
        self
    }
}

fn fen(amount: i64) -> Money {
    Money::from_fen(amount).expect("stored amounts are valid money")
}

fn positive(amount: Money) -> Option<Money> {
    (!amount.is_zero()).then_some(amount)
}

/// The claim's stored contract.
fn contract_of(claim: &ClaimRow) -> pb::ComputeContract {
    pb::ComputeContract::decode(claim.contract.as_slice())
        .expect("a stored contract is a valid ComputeContract")
}

/// The stored decision of a claim or proposal.
pub fn decision_of(bytes: &Option<Vec<u8>>) -> Option<pb::DecisionSummary> {
    bytes.as_ref().map(|bytes| {
        pb::DecisionSummary::decode(bytes.as_slice())
            .expect("a stored decision is a valid DecisionSummary")
    })
}

/// Encodes attachment digests for storage.
pub fn encode_attachments(attachments: &[pb::AttachmentDigest]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for attachment in attachments {
        attachment
            .encode_length_delimited(&mut bytes)
            .expect("a Vec grows as needed");
    }
    bytes
}

/// Decodes stored attachment digests.
pub fn decode_attachments(mut bytes: &[u8]) -> Vec<pb::AttachmentDigest> {
    let mut attachments = Vec::new();
    while !bytes.is_empty() {
        attachments.push(
            pb::AttachmentDigest::decode_length_delimited(&mut bytes)
                .expect("stored attachments are valid digests"),
        );
    }
    attachments
}

/// Today in Asia/Shanghai at `now_us`.
fn shanghai_today(now_us: i64) -> NaiveDate {
    let offset = FixedOffset::east_opt(SHANGHAI_OFFSET_SECONDS).expect("a valid offset");
    chrono::DateTime::from_timestamp_micros(now_us)
        .expect("the database clock is within chrono's range")
        .with_timezone(&offset)
        .date_naive()
}

fn date_text(date: NaiveDate) -> String {
    format!("{:04}-{:02}-{:02}", date.year(), date.month(), date.day())
}

/// The current trace context as W3C header values.
fn trace_context() -> (String, String) {
    let mut metadata = tonic::metadata::MetadataMap::new();
    subsidy_common::telemetry::inject_current(&mut metadata);
    let get = |key: &str| {
        metadata
            .get(key)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    (get("traceparent"), get("tracestate"))
}

/// The rules service's decision, summarised for the application's wire form.
fn decision_summary(decision: &rpb::Decision) -> Result<pb::DecisionSummary, PeerError> {
    let unexpected = |reason: &str| PeerError::Refused {
        service: "rules",
        code: tonic::Code::Internal,
        reason: reason.to_owned(),
    };
    let rate =
        rate_basis_points(&decision.rate_applied).ok_or_else(|| unexpected("RATE_INVALID"))?;
    let entitlement = money("rules", &decision.entitlement)?;
    Ok(pb::DecisionSummary {
        decision_id: decision.decision_id.clone(),
        policy_id: decision.policy_id.clone(),
        policy_version: decision.policy_version.clone(),
        eligible: decision.eligible,
        failed_reasons: decision
            .failed_checks
            .iter()
            .map(|check| pb::FailedReason {
                code: check.reason.clone(),
                message_zh: check.message_zh.clone(),
                message_en: check.message_en.clone(),
            })
            .collect(),
        rate_basis_points: rate,
        entitlement: Some(if decision.eligible {
            entitlement.to_proto()
        } else {
            Money::ZERO.to_proto()
        }),
        decide_time: decision.evaluate_time,
    })
}

fn failed_codes(decision: &pb::DecisionSummary) -> String {
    decision
        .failed_reasons
        .iter()
        .map(|reason| reason.code.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn rules_compute_type(value: i32) -> i32 {
    match pb::ComputeType::try_from(value).unwrap_or(pb::ComputeType::Unspecified) {
        pb::ComputeType::AiAccelerator => rpb::ComputeType::AiAccelerator as i32,
        pb::ComputeType::GeneralPurposeHosting => rpb::ComputeType::GeneralPurposeHosting as i32,
        pb::ComputeType::Storage => rpb::ComputeType::Storage as i32,
        pb::ComputeType::Unspecified => rpb::ComputeType::Unspecified as i32,
    }
}

fn rules_rating(rating: BenefitRating) -> i32 {
    match rating {
        BenefitRating::Unspecified => rpb::BenefitRating::Unspecified as i32,
        BenefitRating::High => rpb::BenefitRating::High as i32,
        BenefitRating::Medium => rpb::BenefitRating::Medium as i32,
        BenefitRating::Low => rpb::BenefitRating::Low as i32,
    }
}

fn rules_category(category: ProposalCategory) -> i32 {
    match category {
        ProposalCategory::TrustedDataSpace => rpb::DataInfraCategory::TrustedDataSpace as i32,
        ProposalCategory::DataField => rpb::DataInfraCategory::DataField as i32,
        ProposalCategory::DataAnnotationBase => rpb::DataInfraCategory::DataAnnotationBase as i32,
        ProposalCategory::OtherDataInfrastructure => {
            rpb::DataInfraCategory::OtherDataInfrastructure as i32
        }
    }
}

fn voucher_facts(
    claim: &ClaimRow,
    total: Money,
    rating: BenefitRating,
    usage: Money,
) -> rpb::ComputeVoucherClaim {
    let contract = contract_of(claim);
    rpb::ComputeVoucherClaim {
        buyer_uscc: claim.enterprise_uscc.clone(),
        seller_uscc: contract.seller_uscc.clone(),
        contract_number: contract.contract_number.clone(),
        signing_date: contract.signing_date,
        signing_time: None,
        contract_total: Some(total.to_proto()),
        compute_type: rules_compute_type(contract.compute_type),
        data_center_division_code: contract.data_center_division_code.clone(),
        related_party_declared: contract.related_party.as_ref().is_some_and(|r| r.related),
        benefit_rating: rules_rating(rating),
        enterprise_usage: Some(usage.to_proto()),
    }
}

/// The orchestrator.
#[derive(Clone, Debug)]
pub struct Workflow {
    store: Store,
    peers: Peers,
    settings: Arc<Settings>,
    relay_wake: Arc<Notify>,
    promotion: Arc<tokio::sync::Mutex<()>>,
}

impl Workflow {
    /// A workflow over `store` talking to `peers`.
    pub fn new(store: Store, peers: Peers, settings: Settings) -> Self {
        Workflow {
            store,
            peers,
            settings: Arc::new(settings),
            relay_wake: Arc::new(Notify::new()),
            promotion: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The peers.
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    /// Wakes the relay after events were committed.
    pub fn relay_wake(&self) -> Arc<Notify> {
        self.relay_wake.clone()
    }

    // ----------------------------------------------------------------------------------------
    // Shared transaction helpers
    // ----------------------------------------------------------------------------------------

    async fn record(
        &self,
        tx: &mut Tx,
        application_id: &str,
        revision: &mut i64,
        updated_us: &mut i64,
        change: Change<'_>,
        now_us: i64,
    ) -> Result<(), DbError> {
        *revision += 1;
        *updated_us = now_us;
        self.store
            .append_history(
                tx,
                &HistoryRow {
                    application_id: application_id.to_owned(),
                    sequence: *revision,
                    from_state: change.from.map(str::to_owned),
                    to_state: change.to.to_owned(),
                    actor: change.actor.to_owned(),
                    reason: change.reason,
                    request_id: change.request_id.to_owned(),
                    created_us: now_us,
                },
            )
            .await
    }

    /// Saves a locked claim, appending a history entry and an event when given.
    async fn save_claim(
        &self,
        tx: &mut Tx,
        claim: &mut ClaimRow,
        change: Option<Change<'_>>,
        event: Option<EventSpec>,
        now_us: i64,
    ) -> Result<(), DbError> {
        if let Some(change) = change {
            let id = claim.claim_id.clone();
            self.record(
                tx,
                &id,
                &mut claim.revision,
                &mut claim.updated_us,
                change,
                now_us,
            )
            .await?;
        }
        self.store.save_claim(tx, claim).await?;
        if let Some(event) = event {
            self.append_event(tx, event, now_us).await?;
        }
        Ok(())
    }

    /// Saves a locked proposal, appending a history entry and an event when given.
    async fn save_proposal(
        &self,
        tx: &mut Tx,
        proposal: &mut ProposalRow,
        change: Option<Change<'_>>,
        event: Option<EventSpec>,
        now_us: i64,
    ) -> Result<(), DbError> {
        if let Some(change) = change {
            let id = proposal.proposal_id.clone();
            self.record(
                tx,
                &id,
                &mut proposal.revision,
                &mut proposal.updated_us,
                change,
                now_us,
            )
            .await?;
        }
        self.store.save_proposal(tx, proposal).await?;
        if let Some(event) = event {
            self.append_event(tx, event, now_us).await?;
        }
        Ok(())
    }

    async fn append_event(&self, tx: &mut Tx, spec: EventSpec, now_us: i64) -> Result<(), DbError> {
        let recipient_email = if spec.enterprise_uscc.is_empty() {
            String::new()
        } else {
            self.store
                .get_enterprise(tx, &spec.enterprise_uscc)
                .await?
                .map(|enterprise| enterprise.contact_email)
                .unwrap_or_default()
        };
        let (traceparent, tracestate) = trace_context();
        let event_id = uuid::Uuid::now_v7().to_string();
        let fields: BTreeMap<String, prost_types::Value> = spec
            .details
            .into_iter()
            .map(|(key, value)| {
                (
                    key.to_owned(),
                    prost_types::Value {
                        kind: Some(prost_types::value::Kind::StringValue(value)),
                    },
                )
            })
            .collect();
        let event = npb::Event {
            event_id: event_id.clone(),
            r#type: spec.event_type as i32,
            application_id: spec.application_id,
            enterprise_uscc: spec.enterprise_uscc,
            program: spec.program as i32,
            amount: spec.amount.and_then(positive).map(Money::to_proto),
            occur_time: Some(timestamp_from_us(now_us)),
            traceparent,
            tracestate,
            payload: Some(prost_types::Struct { fields }),
            language: npb::Language::Unspecified as i32,
            recipient_email,
            round_id: spec.round_id,
            source: EVENT_SOURCE.to_owned(),
            publish_time: None,
        };
        self.store
            .append_event(tx, &event_id, &event.encode_to_vec(), now_us)
            .await
    }

    async fn commit(&self, tx: Tx) -> Result<(), DbError> {
        tx.commit().await?;
        self.relay_wake.notify_one();
        Ok(())
    }

    async fn claim_response(&self, tx: &mut Tx, claim: &ClaimRow) -> Result<pb::Claim, DbError> {
        let position = self.store.waitlist_position(tx, claim).await?;
        Ok(claim_to_proto(claim, position))
    }

    async fn proposal_response(
        &self,
        conn: &mut sqlx::AnyConnection,
        proposal: &ProposalRow,
    ) -> Result<pb::Proposal, DbError> {
        let scores = self.store.scores(conn, &proposal.proposal_id).await?;
        Ok(proposal_to_proto(proposal, &scores))
    }

    async fn round_response(
        &self,
        conn: &mut sqlx::AnyConnection,
        round: &RoundRow,
    ) -> Result<pb::SelectionRound, DbError> {
        let count = self
            .store
            .proposal_count(&mut *conn, &round.round_id)
            .await?;
        let now = self.store.now_us(conn).await?;
        Ok(round_to_proto(round, count, now))
    }

    // ----------------------------------------------------------------------------------------
    // Enterprises
    // ----------------------------------------------------------------------------------------

    /// Registers an enterprise.
    pub async fn register_enterprise(
        &self,
        cmd: RegisterEnterprise,
        caller: &Caller,
    ) -> Result<pb::RegisterEnterpriseResponse, ApplicationError> {
        let mut tx = self.store.begin().await?;
        if let Some(replay) = self
            .store
            .start_request(
                &mut tx,
                &caller.request_id,
                op::REGISTER_ENTERPRISE,
                &caller.fingerprint,
            )
            .await?
        {
            return Ok(replay);
        }
        let now = self.store.now_us(&mut tx).await?;
        let row = EnterpriseRow {
            uscc: cmd.uscc.as_str().to_owned(),
            name: cmd.name,
            contact_email: cmd.contact_email,
            contact_phone: cmd.contact_phone,
            registration_division_code: cmd.registration_division_code,
            created_us: now,
            updated_us: now,
        };
        if !self.store.insert_enterprise(&mut tx, &row).await? {
            return Err(ApplicationError::EnterpriseAlreadyRegistered);
        }
        let response = pb::RegisterEnterpriseResponse {
            enterprise: Some(crate::grpc::enterprise_to_proto(&row)),
        };
        self.store
            .store_response(&mut tx, &caller.request_id, &response)
            .await?;
        tx.commit().await?;
        Ok(response)
    }

    /// Replaces an enterprise's contact details.
    pub async fn update_enterprise_contact(
        &self,
        uscc: &Uscc,
        email: &str,
        phone: &str,
        caller: &Caller,
    ) -> Result<pb::UpdateEnterpriseContactResponse, ApplicationError> {
        let mut tx = self.store.begin().await?;
        if let Some(replay) = self
            .store
            .start_request(
                &mut tx,
                &caller.request_id,
                op::UPDATE_CONTACT,
                &caller.fingerprint,
            )
            .await?
        {
            return Ok(replay);
        }
        let row = self
            .store
            .update_enterprise_contact(&mut tx, uscc.as_str(), email, phone)
            .await?
            .ok_or(ApplicationError::EnterpriseNotFound)?;
        let response = pb::UpdateEnterpriseContactResponse {
            enterprise: Some(crate::grpc::enterprise_to_proto(&row)),
        };
        self.store
            .store_response(&mut tx, &caller.request_id, &response)
            .await?;
        tx.commit().await?;
        Ok(response)
    }

    // ----------------------------------------------------------------------------------------
    // Claims: submission and the funding steps
    // ----------------------------------------------------------------------------------------

    /// Submits a claim: records it, then evaluates and funds it as far as the peers allow.
    pub async fn submit_claim(
        &self,
        cmd: SubmitClaim,
        caller: &Caller,
    ) -> Result<pb::SubmitClaimResponse, ApplicationError> {
        let mut claim_id = None;
        // Two rounds at most: the second sees the claim a concurrent duplicate recorded.
        for _ in 0..2 {
            let status = {
                let mut conn = self.store.read().await?;
                self.store
                    .request_status::<pb::SubmitClaimResponse>(
                        &mut conn,
                        &caller.request_id,
                        op::SUBMIT_CLAIM,
                        &caller.fingerprint,
                    )
                    .await?
            };
            match status {
                RequestStatus::Replay(response) => return Ok(response),
                RequestStatus::Reused => return Err(ApplicationError::RequestIdReused),
                RequestStatus::InProgress(id) => claim_id = Some(id),
                RequestStatus::New => claim_id = self.create_claim(&cmd, caller).await?,
            }
            if claim_id.is_some() {
                break;
            }
        }
        let claim_id = claim_id.ok_or(ApplicationError::RequestIdReused)?;
        self.drive_claim(&claim_id, false).await?;
        let mut tx = self.store.begin().await?;
        if let Some(replay) = self
            .store
            .start_request(
                &mut tx,
                &caller.request_id,
                op::SUBMIT_CLAIM,
                &caller.fingerprint,
            )
            .await?
        {
            return Ok(replay);
        }
        let claim = self
            .store
            .lock_claim(&mut tx, &claim_id)
            .await?
            .ok_or(ApplicationError::ClaimNotFound)?;
        let response = pb::SubmitClaimResponse {
            claim: Some(self.claim_response(&mut tx, &claim).await?),
        };
        self.store
            .store_response(&mut tx, &caller.request_id, &response)
            .await?;
        tx.commit().await?;
        Ok(response)
    }

    /// Records a new claim as SUBMITTED; `None` when a concurrent duplicate of the request
    /// recorded it first.
    async fn create_claim(
        &self,
        cmd: &SubmitClaim,
        caller: &Caller,
    ) -> Result<Option<String>, ApplicationError> {
        let mut tx = self.store.begin().await?;
        if self
            .store
            .get_enterprise(&mut tx, cmd.enterprise.as_str())
            .await?
            .is_none()
        {
            return Err(ApplicationError::EnterpriseNotFound);
        }
        if self
            .store
            .contract_claimed(&mut tx, cmd.seller.as_str(), &cmd.contract.contract_number)
            .await?
        {
            return Err(ApplicationError::DuplicateContract);
        }
        let claim_id = format!("claim-{}", uuid::Uuid::now_v7());
        if !self
            .store
            .record_progress(
                &mut tx,
                &caller.request_id,
                op::SUBMIT_CLAIM,
                &caller.fingerprint,
                &claim_id,
            )
            .await?
        {
            return Ok(None);
        }
        let now = self.store.now_us(&mut tx).await?;
        let mut claim = ClaimRow {
            claim_id: claim_id.clone(),
            state: ClaimState::Submitted,
            enterprise_uscc: cmd.enterprise.as_str().to_owned(),
            pool_id: self.settings.compute_voucher_pool_id.clone(),
            seller_uscc: cmd.seller.as_str().to_owned(),
            contract_number: cmd.contract.contract_number.clone(),
            contract_total_fen: cmd.total.fen(),
            contract: cmd.contract.encode_to_vec(),
            decision: None,
            evaluation_due: true,
            entitlement_fen: 0,
            reserve_attempt: 0,
            reserve_intent_fen: None,
            reservation_id: None,
            reserved_fen: 0,
            hold_expires_us: None,
            release_due: false,
            orphan_check_due: false,
            commit_intent_fen: None,
            commit_request_id: None,
            verified_paid_fen: None,
            benefit_rating: BenefitRating::Unspecified,
            approved_fen: 0,
            reviewer_id: String::new(),
            review_note: String::new(),
            rejection_reason: String::new(),
            withdrawal_reason: String::new(),
            payment_reference: String::new(),
            payment_date: String::new(),
            disbursed_fen: 0,
            disbursed_by: String::new(),
            disbursed_us: None,
            step_us: now,
            step_actor: caller.actor.clone(),
            submit_us: now,
            updated_us: now,
            reviewed_us: None,
            revision: 1,
        };
        if !self.store.insert_claim(&mut tx, &claim).await? {
            // The only unique key a fresh claim can collide on is its contract's.
            return Err(ApplicationError::DuplicateContract);
        }
        let mut revision = 0;
        self.record(
            &mut tx,
            &claim_id,
            &mut revision,
            &mut claim.updated_us,
            Change {
                from: None,
                to: ClaimState::Submitted.as_str(),
                actor: &caller.actor,
                reason: format!(
                    "submitted for contract {} of seller {}",
                    claim.contract_number, claim.seller_uscc
                ),
                request_id: caller.request_id.as_str(),
            },
            now,
        )
        .await?;
        self.append_event(
            &mut tx,
            EventSpec::claim(npb::EventType::ClaimSubmitted, &claim, None)
                .with("contract_total", cmd.total.to_string()),
            now,
        )
        .await?;
        self.commit(tx).await?;
        Ok(Some(claim_id))
    }

    /// Takes a claim through its pending steps. `reconciling` allows steps that are only
    /// safe once the calls that started them are surely over (the orphan sweep).
    pub async fn drive_claim(
        &self,
        claim_id: &str,
        reconciling: bool,
    ) -> Result<ClaimRow, ApplicationError> {
        let mut last = None;
        for _ in 0..CLAIM_STEPS_MAX {
            let claim = {
                let mut conn = self.store.read().await?;
                self.store
                    .get_claim(&mut conn, claim_id)
                    .await?
                    .ok_or(ApplicationError::ClaimNotFound)?
            };
            assert!(
                claim.reserve_intent_fen.is_none() || claim.state.awaits_funding(),
                "a reserve intent only exists while a claim awaits funding"
            );
            if claim.reserve_intent_fen.is_some() {
                self.resolve_reserve(&claim).await?;
            } else if claim.commit_intent_fen.is_some() {
                match self.commit_claim(&claim).await {
                    Err(ApplicationError::ReservationExpired) => {}
                    other => other?,
                }
            } else if claim.release_due {
                self.release_claim(&claim).await?;
            } else if claim.state.awaits_funding() && claim.evaluation_due {
                self.evaluate_claim(&claim).await?;
            } else if claim.state == ClaimState::Submitted {
                self.fund_claim(&claim).await?;
            } else if claim.orphan_check_due && reconciling {
                self.sweep_orphans(&claim).await?;
            } else {
                return Ok(claim);
            }
            last = Some(claim);
        }
        Ok(last.expect("at least one step ran"))
    }

    /// Asks the rules service for a decision on a claim awaiting funding and records it.
    async fn evaluate_claim(&self, seen: &ClaimRow) -> Result<(), ApplicationError> {
        let usage = self
            .peers
            .usage(&seen.pool_id, &seen.enterprise_uscc)
            .await?;
        let version = decision_of(&seen.decision)
            .map(|decision| decision.policy_version)
            .unwrap_or_default();
        let facts = voucher_facts(
            seen,
            fen(seen.contract_total_fen),
            BenefitRating::Unspecified,
            usage,
        );
        let decision = self.peers.evaluate_compute_voucher(facts, &version).await?;
        let summary = decision_summary(&decision)?;
        let entitlement = money("rules", &summary.entitlement)?;
        let mut tx = self.store.begin().await?;
        let Some(mut claim) = self.store.lock_claim(&mut tx, &seen.claim_id).await? else {
            return Err(ApplicationError::ClaimNotFound);
        };
        if claim.state != seen.state || !claim.evaluation_due || claim.reserve_intent_fen.is_some()
        {
            // Another caller progressed the claim meanwhile; its record stands.
            return Ok(());
        }
        let now = self.store.now_us(&mut tx).await?;
        let from = claim.state;
        claim.evaluation_due = false;
        claim.decision = Some(summary.encode_to_vec());
        claim.step_us = now;
        let eligible = summary.eligible && !entitlement.is_zero();
        let (change_reason, event) = if eligible {
            claim.entitlement_fen = entitlement.fen();
            (
                format!(
                    "eligible under policy {} {} (decision {}): entitlement {}",
                    summary.policy_id, summary.policy_version, summary.decision_id, entitlement
                ),
                None,
            )
        } else {
            claim.entitlement_fen = 0;
            claim.state = ClaimState::Ineligible;
            let codes = if summary.eligible {
                "ENTITLEMENT_ZERO".to_owned()
            } else {
                failed_codes(&summary)
            };
            (
                format!(
                    "not eligible under policy {} {} (decision {}): {codes}",
                    summary.policy_id, summary.policy_version, summary.decision_id
                ),
                Some(
                    EventSpec::claim(npb::EventType::ClaimIneligible, &claim, None)
                        .with("failed_reasons", codes),
                ),
            )
        };
        let to = claim.state;
        self.save_claim(
            &mut tx,
            &mut claim,
            Some(Change {
                from: Some(from.as_str()),
                to: to.as_str(),
                actor: SYSTEM_ACTOR,
                reason: change_reason,
                request_id: "",
            }),
            event,
            now,
        )
        .await?;
        self.commit(tx).await?;
        Ok(())
    }

    /// Decides how an eligible claim is funded (reserve now or wait) and starts the reserve.
    async fn fund_claim(&self, seen: &ClaimRow) -> Result<(), ApplicationError> {
        let queue_ahead = if seen.state == ClaimState::Submitted {
            let mut conn = self.store.read().await?;
            self.store.waitlisted_before(&mut conn, seen).await?
        } else {
            false
        };
        let entitlement = fen(seen.entitlement_fen);
        let plan = if queue_ahead {
            FundingPlan::Wait
        } else {
            let available = self.peers.available(&seen.pool_id).await?;
            let shortfall = if available < entitlement {
                let version = decision_of(&seen.decision)
                    .map(|decision| decision.policy_version)
                    .unwrap_or_default();
                self.peers.claim_shortfall(&version).await?
            } else {
                ClaimShortfall::Waitlist
            };
            plan_funding(entitlement, available, shortfall, false)
        };
        let mut tx = self.store.begin().await?;
        let Some(mut claim) = self.store.lock_claim(&mut tx, &seen.claim_id).await? else {
            return Err(ApplicationError::ClaimNotFound);
        };
        if claim.state != seen.state
            || claim.evaluation_due
            || claim.reserve_intent_fen.is_some()
            || claim.reserve_attempt != seen.reserve_attempt
        {
            return Ok(());
        }
        let now = self.store.now_us(&mut tx).await?;
        match plan {
            FundingPlan::Wait if claim.state == ClaimState::Submitted => {
                claim.state = ClaimState::Waitlisted;
                claim.step_us = now;
                let event =
                    EventSpec::claim(npb::EventType::ClaimWaitlisted, &claim, Some(entitlement));
                let reason = if queue_ahead {
                    "older claims wait for money; waiting in submission order".to_owned()
                } else {
                    format!(
                        "the pool cannot cover the entitlement {entitlement} now; waiting in submission order"
                    )
                };
                self.save_claim(
                    &mut tx,
                    &mut claim,
                    Some(Change {
                        from: Some(ClaimState::Submitted.as_str()),
                        to: ClaimState::Waitlisted.as_str(),
                        actor: SYSTEM_ACTOR,
                        reason,
                        request_id: "",
                    }),
                    Some(event),
                    now,
                )
                .await?;
                self.commit(tx).await?;
                Ok(())
            }
            FundingPlan::Wait => Ok(()),
            FundingPlan::Reserve(amount) => {
                claim.reserve_intent_fen = Some(amount.fen());
                claim.step_us = now;
                claim.step_actor = SYSTEM_ACTOR.to_owned();
                self.save_claim(&mut tx, &mut claim, None, None, now)
                    .await?;
                self.commit(tx).await?;
                drop(claim);
                let claim = {
                    let mut conn = self.store.read().await?;
                    self.store.get_claim(&mut conn, &seen.claim_id).await?
                };
                match claim {
                    Some(claim) if claim.reserve_intent_fen.is_some() => {
                        self.resolve_reserve(&claim).await
                    }
                    _ => Ok(()),
                }
            }
        }
    }

    /// Makes (or replays) the reserve call of a recorded intent and records its outcome.
    async fn resolve_reserve(&self, seen: &ClaimRow) -> Result<(), ApplicationError> {
        let amount = fen(seen.reserve_intent_fen.expect("called with an intent"));
        let request_id =
            RequestId::derived(&seen.claim_id, &format!("reserve-{}", seen.reserve_attempt));
        let outcome = self
            .peers
            .reserve(
                &request_id,
                &seen.pool_id,
                &seen.enterprise_uscc,
                amount,
                &seen.claim_id,
                self.settings.hold_seconds,
            )
            .await;
        match outcome {
            Ok(reservation) => {
                #[cfg(feature = "test-faults")]
                crate::faults::reached(crate::faults::Point::AfterReserve, &seen.contract_number)
                    .await;
                self.record_reservation(seen, amount, reservation).await
            }
            Err(PeerError::Refused { reason, .. })
                if reason == "POOL_EXHAUSTED" || reason == "BENEFICIARY_CAP_EXCEEDED" =>
            {
                let mut tx = self.store.begin().await?;
                let Some(mut claim) = self.store.lock_claim(&mut tx, &seen.claim_id).await? else {
                    return Err(ApplicationError::ClaimNotFound);
                };
                if claim.reserve_intent_fen != seen.reserve_intent_fen
                    || claim.reserve_attempt != seen.reserve_attempt
                {
                    return Ok(());
                }
                let now = self.store.now_us(&mut tx).await?;
                claim.reserve_intent_fen = None;
                claim.reserve_attempt += 1;
                claim.step_us = now;
                let from = claim.state;
                let (change, event) = if reason == "BENEFICIARY_CAP_EXCEEDED" {
                    // The enterprise's usage changed since the decision (a concurrent claim):
                    // the entitlement is decided again on the current usage.
                    claim.evaluation_due = true;
                    (
                        Some(Change {
                            from: Some(from.as_str()),
                            to: from.as_str(),
                            actor: SYSTEM_ACTOR,
                            reason: "the enterprise cap no longer covers the entitlement; deciding again".into(),
                            request_id: "",
                        }),
                        None,
                    )
                } else if from == ClaimState::Submitted {
                    claim.state = ClaimState::Waitlisted;
                    let event = EventSpec::claim(
                        npb::EventType::ClaimWaitlisted,
                        &claim,
                        Some(fen(claim.entitlement_fen)),
                    );
                    (
                        Some(Change {
                            from: Some(from.as_str()),
                            to: ClaimState::Waitlisted.as_str(),
                            actor: SYSTEM_ACTOR,
                            reason: format!(
                                "the pool cannot cover {amount} now; waiting in submission order"
                            ),
                            request_id: "",
                        }),
                        Some(event),
                    )
                } else {
                    (None, None)
                };
                self.save_claim(&mut tx, &mut claim, change, event, now)
                    .await?;
                self.commit(tx).await?;
                Ok(())
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Records a reservation made for a claim's intent, or releases it when the claim has
    /// moved on meanwhile.
    async fn record_reservation(
        &self,
        seen: &ClaimRow,
        amount: Money,
        reservation: bpb::Reservation,
    ) -> Result<(), ApplicationError> {
        let held = money("budget", &reservation.held_amount)?;
        if held != amount || reservation.reference != seen.claim_id {
            return Err(ApplicationError::UpstreamUnexpected {
                service: "budget",
                code: "Ok".into(),
                reason: "RESERVATION_DIFFERS_FROM_REQUEST".into(),
            });
        }
        let mut tx = self.store.begin().await?;
        let Some(mut claim) = self.store.lock_claim(&mut tx, &seen.claim_id).await? else {
            return Err(ApplicationError::ClaimNotFound);
        };
        let current = claim.reserve_intent_fen == Some(amount.fen())
            && claim.reserve_attempt == seen.reserve_attempt
            && claim.state.awaits_funding();
        if current {
            let now = self.store.now_us(&mut tx).await?;
            let from = claim.state;
            claim.state = ClaimState::PendingReview;
            claim.reservation_id = Some(reservation.reservation_id.clone());
            claim.reserved_fen = amount.fen();
            claim.hold_expires_us = reservation
                .expire_time
                .map(|t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1_000);
            claim.reserve_intent_fen = None;
            claim.step_us = now;
            let mut reason = if from == ClaimState::Waitlisted {
                format!("promoted from the waitlist: {amount} held")
            } else {
                format!("{amount} held for review")
            };
            if amount.fen() < claim.entitlement_fen {
                reason.push_str(&format!(
                    " (partly funded: the pool could not cover the entitlement {})",
                    fen(claim.entitlement_fen)
                ));
            }
            let event = EventSpec::claim(npb::EventType::ClaimReserved, &claim, Some(amount))
                .with("reservation_id", reservation.reservation_id.clone());
            self.save_claim(
                &mut tx,
                &mut claim,
                Some(Change {
                    from: Some(from.as_str()),
                    to: ClaimState::PendingReview.as_str(),
                    actor: SYSTEM_ACTOR,
                    reason,
                    request_id: "",
                }),
                Some(event),
                now,
            )
            .await?;
            self.commit(tx).await?;
            return Ok(());
        }
        if claim.reservation_id.as_deref() == Some(reservation.reservation_id.as_str()) {
            // Recorded by a concurrent caller of the same step.
            return Ok(());
        }
        drop(tx);
        // The claim moved on (withdrawn or rejected) while the call was under way: the hold
        // must not outlive it.
        self.release_orphan(&seen.claim_id, &reservation.reservation_id)
            .await
    }

    async fn release_orphan(
        &self,
        claim_id: &str,
        reservation_id: &str,
    ) -> Result<(), ApplicationError> {
        let request_id = RequestId::derived(claim_id, &format!("release-orphan-{reservation_id}"));
        match self
            .peers
            .release(
                &request_id,
                reservation_id,
                "the claim moved on before the reservation was recorded",
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(PeerError::Refused { reason, .. }) if reason == "RESERVATION_NOT_HELD" => Ok(()),
            Err(error) => {
                // Leave it to the reconciler's sweep.
                let mut tx = self.store.begin().await?;
                if let Some(mut claim) = self.store.lock_claim(&mut tx, claim_id).await? {
                    let now = self.store.now_us(&mut tx).await?;
                    claim.orphan_check_due = true;
                    claim.step_us = now;
                    self.save_claim(&mut tx, &mut claim, None, None, now)
                        .await?;
                    tx.commit().await?;
                }
                Err(error.into())
            }
        }
    }

    /// Releases the recorded hold of a claim that was rejected or withdrawn.
    async fn release_claim(&self, seen: &ClaimRow) -> Result<(), ApplicationError> {
        let reservation_id = seen
            .reservation_id
            .clone()
            .expect("a release is due only for a recorded reservation");
        let request_id = RequestId::derived(&seen.claim_id, "release");
        let reason = format!("claim {} is {}", seen.claim_id, seen.state);
        match self
            .peers
            .release(&request_id, &reservation_id, &reason)
            .await
        {
            Ok(_) => {}
            // Already expired: the money is back in the pool either way.
            Err(PeerError::Refused { reason, .. }) if reason == "RESERVATION_NOT_HELD" => {}
            Err(error) => return Err(error.into()),
        }
        let mut tx = self.store.begin().await?;
        if let Some(mut claim) = self.store.lock_claim(&mut tx, &seen.claim_id).await?
            && claim.release_due
        {
            let now = self.store.now_us(&mut tx).await?;
            claim.release_due = false;
            claim.step_us = now;
            self.save_claim(&mut tx, &mut claim, None, None, now)
                .await?;
        }
        tx.commit().await?;
        self.promote(&seen.pool_id).await
    }

    /// Releases holds made under a claim's reference that the claim does not own (a reserve
    /// whose outcome was never recorded before the claim moved on).
    async fn sweep_orphans(&self, seen: &ClaimRow) -> Result<(), ApplicationError> {
        let held = self
            .peers
            .held_by_reference(&seen.pool_id, &seen.claim_id)
            .await?;
        let owns_hold = matches!(seen.state, ClaimState::PendingReview);
        let mut released = false;
        for reservation in held {
            if owns_hold && seen.reservation_id.as_deref() == Some(&reservation.reservation_id) {
                continue;
            }
            self.release_orphan(&seen.claim_id, &reservation.reservation_id)
                .await?;
            released = true;
        }
        let mut tx = self.store.begin().await?;
        if let Some(mut claim) = self.store.lock_claim(&mut tx, &seen.claim_id).await? {
            let now = self.store.now_us(&mut tx).await?;
            claim.orphan_check_due = false;
            claim.step_us = now;
            self.save_claim(&mut tx, &mut claim, None, None, now)
                .await?;
        }
        tx.commit().await?;
        if released {
            self.promote(&seen.pool_id).await?;
        }
        Ok(())
    }

    /// Serves a pool's waitlist, oldest first, the head only when its full entitlement fits
    /// (or partly, when the policy says so). Nobody skips the head.
    pub async fn promote(&self, pool_id: &str) -> Result<(), ApplicationError> {
        let _serialised = self.promotion.lock().await;
        for _ in 0..PROMOTIONS_PER_PASS_MAX {
            let Some(head) = self.store.waitlist_head(pool_id).await? else {
                return Ok(());
            };
            let claim = {
                let mut conn = self.store.read().await?;
                self.store
                    .get_claim(&mut conn, &head)
                    .await?
                    .ok_or(ApplicationError::ClaimNotFound)?
            };
            if claim.reserve_intent_fen.is_some() {
                self.resolve_reserve(&claim).await?;
            } else if claim.evaluation_due {
                self.evaluate_claim(&claim).await?;
                continue;
            } else {
                self.fund_claim(&claim).await?;
            }
            let after = {
                let mut conn = self.store.read().await?;
                self.store.get_claim(&mut conn, &head).await?
            };
            if after.is_some_and(|after| {
                after.state == ClaimState::Waitlisted
                    && after.reserve_intent_fen.is_none()
                    && !after.evaluation_due
            }) {
                // The head still does not fit: everyone behind it waits too.
                return Ok(());
            }
        }
        Ok(())
    }

    // ----------------------------------------------------------------------------------------
    // Claims: review, withdrawal, payment, expiry
    // ----------------------------------------------------------------------------------------

    /// Approves a claim with the verified amount: recomputes the subsidy, commits it.
    pub async fn approve_claim(
        &self,
        cmd: ApproveClaim,
        caller: &Caller,
    ) -> Result<pb::ApproveClaimResponse, ApplicationError> {
        let status = {
            let mut conn = self.store.read().await?;
            self.store
                .request_status::<pb::ApproveClaimResponse>(
                    &mut conn,
                    &caller.request_id,
                    op::APPROVE_CLAIM,
                    &caller.fingerprint,
                )
                .await?
        };
        match status {
            RequestStatus::Replay(response) => return Ok(response),
            RequestStatus::Reused => return Err(ApplicationError::RequestIdReused),
            RequestStatus::InProgress(claim_id) => {
                return self.finish_approval(&claim_id, caller).await;
            }
            RequestStatus::New => {}
        }
        let seen = {
            let mut conn = self.store.read().await?;
            self.store
                .get_claim(&mut conn, &cmd.claim_id)
                .await?
                .ok_or(ApplicationError::ClaimNotFound)?
        };
        if !seen.state.can_approve() || seen.commit_intent_fen.is_some() {
            return Err(ApplicationError::TransitionNotAllowed(
                seen.state.to_string(),
            ));
        }
        if cmd.verified.fen() > seen.contract_total_fen {
            return Err(ApplicationError::ApprovedAmountExceedsContract);
        }
        // The subsidy is decided again on what was actually invoiced and paid, under the
        // policy version of the original decision, with the enterprise's usage by others.
        let reserved = fen(seen.reserved_fen);
        let usage = self
            .peers
            .usage(&seen.pool_id, &seen.enterprise_uscc)
            .await?;
        let version = decision_of(&seen.decision)
            .map(|decision| decision.policy_version)
            .unwrap_or_default();
        let facts = voucher_facts(
            &seen,
            cmd.verified,
            cmd.rating,
            usage.saturating_sub(reserved),
        );
        let decision = self.peers.evaluate_compute_voucher(facts, &version).await?;
        let recomputed = money("rules", &decision.entitlement)?;
        let approved = approved_amount(recomputed, reserved);
        if !decision.eligible || approved.is_zero() {
            return Err(ApplicationError::NotEligibleOnRecheck);
        }
        let mut tx = self.store.begin().await?;
        let Some(mut claim) = self.store.lock_claim(&mut tx, &cmd.claim_id).await? else {
            return Err(ApplicationError::ClaimNotFound);
        };
        if !claim.state.can_approve() || claim.commit_intent_fen.is_some() {
            return Err(ApplicationError::TransitionNotAllowed(
                claim.state.to_string(),
            ));
        }
        if !self
            .store
            .record_progress(
                &mut tx,
                &caller.request_id,
                op::APPROVE_CLAIM,
                &caller.fingerprint,
                &claim.claim_id,
            )
            .await?
        {
            // A concurrent duplicate of this request started the approval: finish it.
            drop(tx);
            return self.finish_approval(&cmd.claim_id, caller).await;
        }
        let now = self.store.now_us(&mut tx).await?;
        claim.commit_intent_fen = Some(approved.fen());
        claim.commit_request_id = Some(caller.request_id.to_string());
        claim.verified_paid_fen = Some(cmd.verified.fen());
        claim.benefit_rating = cmd.rating;
        claim.reviewer_id = cmd.reviewer_id;
        claim.review_note = cmd.note;
        claim.step_us = now;
        claim.step_actor = caller.actor.clone();
        self.save_claim(&mut tx, &mut claim, None, None, now)
            .await?;
        tx.commit().await?;
        self.finish_approval(&claim.claim_id, caller).await
    }

    async fn finish_approval(
        &self,
        claim_id: &str,
        caller: &Caller,
    ) -> Result<pb::ApproveClaimResponse, ApplicationError> {
        let claim = {
            let mut conn = self.store.read().await?;
            self.store
                .get_claim(&mut conn, claim_id)
                .await?
                .ok_or(ApplicationError::ClaimNotFound)?
        };
        if claim.commit_intent_fen.is_some()
            && claim.commit_request_id.as_deref() == Some(caller.request_id.as_str())
        {
            self.commit_claim(&claim).await?;
        }
        let mut conn = self.store.read().await?;
        match self
            .store
            .request_status::<pb::ApproveClaimResponse>(
                &mut conn,
                &caller.request_id,
                op::APPROVE_CLAIM,
                &caller.fingerprint,
            )
            .await?
        {
            RequestStatus::Replay(response) => Ok(response),
            _ => {
                let claim = self
                    .store
                    .get_claim(&mut conn, claim_id)
                    .await?
                    .ok_or(ApplicationError::ClaimNotFound)?;
                if claim.state == ClaimState::Expired {
                    Err(ApplicationError::ReservationExpired)
                } else {
                    Err(ApplicationError::TransitionNotAllowed(
                        claim.state.to_string(),
                    ))
                }
            }
        }
    }

    /// Commits the approval intent of a claim and records it (or the expiry of its hold).
    async fn commit_claim(&self, seen: &ClaimRow) -> Result<(), ApplicationError> {
        let amount = fen(seen.commit_intent_fen.expect("called with an intent"));
        let reservation_id = seen
            .reservation_id
            .clone()
            .expect("a claim under review has a reservation");
        let request_id = RequestId::derived(&seen.claim_id, "commit");
        match self
            .peers
            .commit(&request_id, &reservation_id, amount)
            .await
        {
            Ok(reservation) => {
                #[cfg(feature = "test-faults")]
                crate::faults::reached(crate::faults::Point::AfterCommit, &seen.contract_number)
                    .await;
                let committed = money("budget", &reservation.committed_amount)?;
                let mut tx = self.store.begin().await?;
                let Some(mut claim) = self.store.lock_claim(&mut tx, &seen.claim_id).await? else {
                    return Err(ApplicationError::ClaimNotFound);
                };
                if claim.commit_intent_fen != Some(amount.fen())
                    || claim.state != ClaimState::PendingReview
                {
                    return Ok(());
                }
                let now = self.store.now_us(&mut tx).await?;
                claim.state = ClaimState::Approved;
                claim.approved_fen = committed.fen();
                claim.commit_intent_fen = None;
                claim.reviewed_us = Some(now);
                claim.step_us = now;
                let returned = fen(claim.reserved_fen).saturating_sub(committed);
                let request = claim.commit_request_id.clone().unwrap_or_default();
                let actor = claim.step_actor.clone();
                let event =
                    EventSpec::claim(npb::EventType::ClaimApproved, &claim, Some(committed))
                        .with("reviewer_id", claim.reviewer_id.clone());
                let reason = format!(
                    "approved by {} on verified {}: {} committed, {} returned to the pool",
                    claim.reviewer_id,
                    fen(claim.verified_paid_fen.unwrap_or_default()),
                    committed,
                    returned
                );
                self.save_claim(
                    &mut tx,
                    &mut claim,
                    Some(Change {
                        from: Some(ClaimState::PendingReview.as_str()),
                        to: ClaimState::Approved.as_str(),
                        actor: &actor,
                        reason,
                        request_id: &request,
                    }),
                    Some(event),
                    now,
                )
                .await?;
                let response = pb::ApproveClaimResponse {
                    claim: Some(self.claim_response(&mut tx, &claim).await?),
                };
                self.finish_progress(&mut tx, &request, op::APPROVE_CLAIM, &response)
                    .await?;
                self.commit(tx).await?;
                if !returned.is_zero() {
                    self.promote(&claim.pool_id).await?;
                }
                Ok(())
            }
            Err(PeerError::Refused { reason, .. }) if reason == "RESERVATION_NOT_HELD" => {
                let reservation = self.peers.reservation(&reservation_id).await?;
                let gone = matches!(
                    bpb::ReservationState::try_from(reservation.state),
                    Ok(bpb::ReservationState::Expired | bpb::ReservationState::Released)
                );
                if !gone {
                    return Err(ApplicationError::UpstreamUnexpected {
                        service: "budget",
                        code: "FailedPrecondition".into(),
                        reason: "RESERVATION_NOT_HELD".into(),
                    });
                }
                self.expire_claim(seen).await?;
                Err(ApplicationError::ReservationExpired)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Stores `response` for a request recorded in the request log (a multi-step request that
    /// the reconciler may finish on the caller's behalf).
    async fn finish_progress<R: Message + Default>(
        &self,
        tx: &mut Tx,
        request_id: &str,
        operation: &str,
        response: &R,
    ) -> Result<(), ApplicationError> {
        let fingerprint: Option<String> = sqlx::query_scalar(
            "SELECT fingerprint FROM request_progress WHERE request_id = $1 AND operation = $2",
        )
        .bind(request_id)
        .bind(operation)
        .fetch_optional(&mut **tx)
        .await
        .map_err(DbError::from)?;
        let Some(fingerprint) = fingerprint else {
            return Ok(());
        };
        let request_id = RequestId::parse(request_id).expect("stored request ids were validated");
        if self
            .store
            .start_request::<R>(tx, &request_id, operation, &fingerprint)
            .await?
            .is_none()
        {
            self.store.store_response(tx, &request_id, response).await?;
        }
        Ok(())
    }

    /// Records that a claim's hold expired (found by the reconciler or by a refused commit).
    async fn expire_claim(&self, seen: &ClaimRow) -> Result<(), ApplicationError> {
        let mut tx = self.store.begin().await?;
        let Some(mut claim) = self.store.lock_claim(&mut tx, &seen.claim_id).await? else {
            return Err(ApplicationError::ClaimNotFound);
        };
        if claim.state != ClaimState::PendingReview || claim.reservation_id != seen.reservation_id {
            return Ok(());
        }
        let now = self.store.now_us(&mut tx).await?;
        claim.state = ClaimState::Expired;
        claim.commit_intent_fen = None;
        claim.step_us = now;
        let event = EventSpec::claim(
            npb::EventType::ClaimExpired,
            &claim,
            Some(fen(claim.reserved_fen)),
        );
        self.save_claim(
            &mut tx,
            &mut claim,
            Some(Change {
                from: Some(ClaimState::PendingReview.as_str()),
                to: ClaimState::Expired.as_str(),
                actor: SYSTEM_ACTOR,
                reason: "the hold expired before review; its money returned to the pool".into(),
                request_id: "",
            }),
            Some(event),
            now,
        )
        .await?;
        self.commit(tx).await?;
        self.promote(&seen.pool_id).await
    }

    /// Checks with the budget whether a claim's hold has expired and records it.
    pub async fn check_hold(&self, claim_id: &str) -> Result<(), ApplicationError> {
        let claim = {
            let mut conn = self.store.read().await?;
            self.store.get_claim(&mut conn, claim_id).await?
        };
        let Some(claim) = claim else {
            return Ok(());
        };
        let (ClaimState::PendingReview, Some(reservation_id), None) = (
            claim.state,
            claim.reservation_id.as_deref(),
            claim.commit_intent_fen,
        ) else {
            return Ok(());
        };
        let reservation = self.peers.reservation(reservation_id).await?;
        if matches!(
            bpb::ReservationState::try_from(reservation.state),
            Ok(bpb::ReservationState::Expired | bpb::ReservationState::Released)
        ) {
            self.expire_claim(&claim).await?;
        }
        Ok(())
    }

    /// Rejects a claim.
    pub async fn reject_claim(
        &self,
        cmd: RejectClaim,
        caller: &Caller,
    ) -> Result<pb::RejectClaimResponse, ApplicationError> {
        let reason_text = format!(
            "rejected by {}: {}{}",
            cmd.reviewer_id,
            cmd.reason.as_str(),
            if cmd.note.is_empty() {
                String::new()
            } else {
                format!(": {}", cmd.note)
            }
        );
        let reason = cmd.reason;
        let (response, claim) = self
            .end_claim(
                &cmd.claim_id.clone(),
                caller,
                op::REJECT_CLAIM,
                ClaimState::Rejected,
                reason_text,
                move |claim, now| {
                    claim.rejection_reason = reason.as_str().to_owned();
                    claim.review_note = cmd.note;
                    claim.reviewer_id = cmd.reviewer_id;
                    claim.reviewed_us = Some(now);
                },
                |claim| {
                    EventSpec::claim(npb::EventType::ClaimRejected, claim, None)
                        .with("rejection_reason", claim.rejection_reason.clone())
                },
                |claim| pb::RejectClaimResponse { claim: Some(claim) },
            )
            .await?;
        self.after_end(claim).await;
        Ok(response)
    }

    /// Withdraws a claim on the applicant's request.
    pub async fn withdraw_claim(
        &self,
        claim_id: &str,
        reason: String,
        caller: &Caller,
    ) -> Result<pb::WithdrawClaimResponse, ApplicationError> {
        let reason_text = format!("withdrawn by the applicant: {reason}");
        let (response, claim) = self
            .end_claim(
                claim_id,
                caller,
                op::WITHDRAW_CLAIM,
                ClaimState::Withdrawn,
                reason_text,
                move |claim, _now| claim.withdrawal_reason = reason,
                |claim| {
                    EventSpec::claim(npb::EventType::ClaimWithdrawn, claim, None)
                        .with("withdrawal_reason", claim.withdrawal_reason.clone())
                },
                |claim| pb::WithdrawClaimResponse { claim: Some(claim) },
            )
            .await?;
        self.after_end(claim).await;
        Ok(response)
    }

    /// Moves a claim to REJECTED or WITHDRAWN in one transaction, marking its hold for
    /// release (and a reserve still under way for the orphan sweep).
    #[allow(clippy::too_many_arguments)]
    async fn end_claim<R: Message + Default>(
        &self,
        claim_id: &str,
        caller: &Caller,
        operation: &str,
        to: ClaimState,
        reason: String,
        apply: impl FnOnce(&mut ClaimRow, i64),
        event: impl FnOnce(&ClaimRow) -> EventSpec,
        respond: impl FnOnce(pb::Claim) -> R,
    ) -> Result<(R, Option<ClaimRow>), ApplicationError> {
        let mut tx = self.store.begin().await?;
        if let Some(replay) = self
            .store
            .start_request::<R>(&mut tx, &caller.request_id, operation, &caller.fingerprint)
            .await?
        {
            return Ok((replay, None));
        }
        let Some(mut claim) = self.store.lock_claim(&mut tx, claim_id).await? else {
            return Err(ApplicationError::ClaimNotFound);
        };
        let allowed = match to {
            ClaimState::Rejected => claim.state.can_reject(),
            _ => claim.state.can_withdraw(),
        };
        if !allowed || claim.commit_intent_fen.is_some() {
            return Err(ApplicationError::TransitionNotAllowed(
                claim.state.to_string(),
            ));
        }
        let now = self.store.now_us(&mut tx).await?;
        let from = claim.state;
        claim.state = to;
        claim.release_due = claim.reservation_id.is_some();
        if claim.reserve_intent_fen.take().is_some() {
            claim.orphan_check_due = true;
        }
        claim.step_us = now;
        apply(&mut claim, now);
        let event = event(&claim);
        self.save_claim(
            &mut tx,
            &mut claim,
            Some(Change {
                from: Some(from.as_str()),
                to: to.as_str(),
                actor: &caller.actor,
                reason,
                request_id: caller.request_id.as_str(),
            }),
            Some(event),
            now,
        )
        .await?;
        let response = respond(self.claim_response(&mut tx, &claim).await?);
        self.store
            .store_response(&mut tx, &caller.request_id, &response)
            .await?;
        self.commit(tx).await?;
        Ok((response, Some(claim)))
    }

    /// Returns the money of a claim that ended and serves the waitlist; failures are left to
    /// the reconciler (the claim's state is already recorded).
    async fn after_end(&self, claim: Option<ClaimRow>) {
        let Some(claim) = claim else { return };
        let result = if claim.release_due {
            self.release_claim(&claim).await
        } else {
            self.promote(&claim.pool_id).await
        };
        if let Err(error) = result {
            tracing::warn!(claim_id = %claim.claim_id, %error, "follow-up left to the reconciler");
        }
    }

    /// Records the payment of an approved claim.
    pub async fn disburse_claim(
        &self,
        cmd: Disbursement,
        caller: &Caller,
    ) -> Result<pb::RecordClaimDisbursementResponse, ApplicationError> {
        let mut tx = self.store.begin().await?;
        if let Some(replay) = self
            .store
            .start_request(
                &mut tx,
                &caller.request_id,
                op::DISBURSE_CLAIM,
                &caller.fingerprint,
            )
            .await?
        {
            return Ok(replay);
        }
        let Some(mut claim) = self.store.lock_claim(&mut tx, &cmd.id).await? else {
            return Err(ApplicationError::ClaimNotFound);
        };
        if !claim.state.can_disburse() {
            return Err(ApplicationError::TransitionNotAllowed(
                claim.state.to_string(),
            ));
        }
        let now = self.store.now_us(&mut tx).await?;
        check_payment(&cmd, claim.approved_fen, now)?;
        claim.state = ClaimState::Disbursed;
        claim.payment_reference = cmd.payment_reference.clone();
        claim.payment_date = date_text(cmd.payment_date);
        claim.disbursed_fen = cmd.amount.fen();
        claim.disbursed_by = caller.actor.clone();
        claim.disbursed_us = Some(now);
        claim.step_us = now;
        let event = EventSpec::claim(npb::EventType::ClaimDisbursed, &claim, Some(cmd.amount))
            .with("payment_reference", cmd.payment_reference.clone());
        let reason = format!(
            "{} paid on {} (payment {})",
            cmd.amount, claim.payment_date, cmd.payment_reference
        );
        self.save_claim(
            &mut tx,
            &mut claim,
            Some(Change {
                from: Some(ClaimState::Approved.as_str()),
                to: ClaimState::Disbursed.as_str(),
                actor: &caller.actor,
                reason,
                request_id: caller.request_id.as_str(),
            }),
            Some(event),
            now,
        )
        .await?;
        let response = pb::RecordClaimDisbursementResponse {
            claim: Some(self.claim_response(&mut tx, &claim).await?),
        };
        self.store
            .store_response(&mut tx, &caller.request_id, &response)
            .await?;
        self.commit(tx).await?;
        Ok(response)
    }

    // ----------------------------------------------------------------------------------------
    // Selection rounds and proposals
    // ----------------------------------------------------------------------------------------

    /// Opens a selection round for a pool that the budget service knows.
    pub async fn create_round(
        &self,
        cmd: CreateRound,
        caller: &Caller,
    ) -> Result<pb::CreateSelectionRoundResponse, ApplicationError> {
        {
            let mut conn = self.store.read().await?;
            match self
                .store
                .request_status::<pb::CreateSelectionRoundResponse>(
                    &mut conn,
                    &caller.request_id,
                    op::CREATE_ROUND,
                    &caller.fingerprint,
                )
                .await?
            {
                RequestStatus::Replay(response) => return Ok(response),
                RequestStatus::Reused => return Err(ApplicationError::RequestIdReused),
                RequestStatus::New | RequestStatus::InProgress(_) => {}
            }
        }
        match self.peers.pool(&cmd.pool_id).await {
            Ok(_) => {}
            Err(PeerError::Refused { reason, .. }) if reason == "POOL_NOT_FOUND" => {
                return Err(ApplicationError::PoolNotFound);
            }
            Err(error) => return Err(error.into()),
        }
        let mut tx = self.store.begin().await?;
        if let Some(replay) = self
            .store
            .start_request(
                &mut tx,
                &caller.request_id,
                op::CREATE_ROUND,
                &caller.fingerprint,
            )
            .await?
        {
            return Ok(replay);
        }
        let now = self.store.now_us(&mut tx).await?;
        if cmd.deadline_us <= now {
            return Err(ApplicationError::invalid(
                "submission_deadline_time",
                "must be in the future",
            ));
        }
        if cmd.deadline_us - now > crate::domain::DEADLINE_AHEAD_US_MAX {
            return Err(ApplicationError::invalid(
                "submission_deadline_time",
                "must be at most one year ahead",
            ));
        }
        let round = RoundRow {
            round_id: format!("round-{}", uuid::Uuid::now_v7()),
            pool_id: cmd.pool_id,
            title: cmd.title,
            state: RoundState::Open,
            deadline_us: cmd.deadline_us,
            created_by: caller.actor.clone(),
            created_us: now,
            closed_us: None,
            finalize_started_us: None,
            ranking: None,
            ranking_decision_id: String::new(),
            finalized_us: None,
            award_count: 0,
            awarded_total_fen: 0,
        };
        self.store.insert_round(&mut tx, &round).await?;
        let response = pb::CreateSelectionRoundResponse {
            round: Some(round_to_proto(&round, 0, now)),
        };
        self.store
            .store_response(&mut tx, &caller.request_id, &response)
            .await?;
        tx.commit().await?;
        Ok(response)
    }

    /// Closes an OPEN round early.
    pub async fn close_round(
        &self,
        round_id: &str,
        caller: &Caller,
    ) -> Result<pb::CloseSelectionRoundResponse, ApplicationError> {
        let mut tx = self.store.begin().await?;
        if let Some(replay) = self
            .store
            .start_request(
                &mut tx,
                &caller.request_id,
                op::CLOSE_ROUND,
                &caller.fingerprint,
            )
            .await?
        {
            return Ok(replay);
        }
        let Some(mut round) = self.store.lock_round(&mut tx, round_id).await? else {
            return Err(ApplicationError::RoundNotFound);
        };
        let now = self.store.now_us(&mut tx).await?;
        match round.state.effective(round.deadline_us, now) {
            RoundState::Finalized => return Err(ApplicationError::RoundAlreadyFinalized),
            RoundState::Closed | RoundState::Finalizing => {
                return Err(ApplicationError::RoundClosed);
            }
            RoundState::Open => {}
        }
        round.state = RoundState::Closed;
        round.closed_us = Some(now);
        self.store.save_round(&mut tx, &round).await?;
        let response = pb::CloseSelectionRoundResponse {
            round: Some(self.round_response(&mut tx, &round).await?),
        };
        self.store
            .store_response(&mut tx, &caller.request_id, &response)
            .await?;
        tx.commit().await?;
        Ok(response)
    }

    /// Submits a proposal into an OPEN round and screens it.
    pub async fn submit_proposal(
        &self,
        cmd: SubmitProposal,
        caller: &Caller,
    ) -> Result<pb::SubmitProposalResponse, ApplicationError> {
        let mut proposal_id = None;
        // Two rounds at most: the second sees the proposal a concurrent duplicate recorded.
        for _ in 0..2 {
            let status = {
                let mut conn = self.store.read().await?;
                self.store
                    .request_status::<pb::SubmitProposalResponse>(
                        &mut conn,
                        &caller.request_id,
                        op::SUBMIT_PROPOSAL,
                        &caller.fingerprint,
                    )
                    .await?
            };
            match status {
                RequestStatus::Replay(response) => return Ok(response),
                RequestStatus::Reused => return Err(ApplicationError::RequestIdReused),
                RequestStatus::InProgress(id) => proposal_id = Some(id),
                RequestStatus::New => proposal_id = self.create_proposal(&cmd, caller).await?,
            }
            if proposal_id.is_some() {
                break;
            }
        }
        let proposal_id = proposal_id.ok_or(ApplicationError::RequestIdReused)?;
        self.screen_proposal(&proposal_id).await?;
        let mut tx = self.store.begin().await?;
        if let Some(replay) = self
            .store
            .start_request(
                &mut tx,
                &caller.request_id,
                op::SUBMIT_PROPOSAL,
                &caller.fingerprint,
            )
            .await?
        {
            return Ok(replay);
        }
        let proposal = self
            .store
            .lock_proposal(&mut tx, &proposal_id)
            .await?
            .ok_or(ApplicationError::ProposalNotFound)?;
        let response = pb::SubmitProposalResponse {
            proposal: Some(self.proposal_response(&mut tx, &proposal).await?),
        };
        self.store
            .store_response(&mut tx, &caller.request_id, &response)
            .await?;
        tx.commit().await?;
        Ok(response)
    }

    async fn create_proposal(
        &self,
        cmd: &SubmitProposal,
        caller: &Caller,
    ) -> Result<Option<String>, ApplicationError> {
        let mut tx = self.store.begin().await?;
        let Some(round) = self.store.lock_round(&mut tx, &cmd.round_id).await? else {
            return Err(ApplicationError::RoundNotFound);
        };
        let now = self.store.now_us(&mut tx).await?;
        match round.state.effective(round.deadline_us, now) {
            RoundState::Finalized => return Err(ApplicationError::RoundAlreadyFinalized),
            RoundState::Closed | RoundState::Finalizing => {
                return Err(ApplicationError::RoundClosed);
            }
            RoundState::Open => {}
        }
        if self.store.proposal_count(&mut tx, &round.round_id).await? >= ROUND_PROPOSALS_MAX {
            return Err(ApplicationError::invalid(
                "round_id",
                format!("the round holds its maximum of {ROUND_PROPOSALS_MAX} proposals"),
            ));
        }
        if self
            .store
            .get_enterprise(&mut tx, cmd.applicant.as_str())
            .await?
            .is_none()
        {
            return Err(ApplicationError::EnterpriseNotFound);
        }
        let proposal_id = format!("proposal-{}", uuid::Uuid::now_v7());
        if !self
            .store
            .record_progress(
                &mut tx,
                &caller.request_id,
                op::SUBMIT_PROPOSAL,
                &caller.fingerprint,
                &proposal_id,
            )
            .await?
        {
            return Ok(None);
        }
        let mut proposal = ProposalRow {
            proposal_id: proposal_id.clone(),
            round_id: round.round_id.clone(),
            state: ProposalState::Submitted,
            applicant_uscc: cmd.applicant.as_str().to_owned(),
            category: cmd.category,
            title: cmd.title.clone(),
            requested_fen: cmd.requested.fen(),
            summary: cmd.summary.clone(),
            attachments: encode_attachments(&cmd.attachments),
            decision: None,
            rank: 0,
            planned_award_fen: 0,
            reservation_id: None,
            awarded_fen: 0,
            withdrawal_reason: String::new(),
            payment_reference: String::new(),
            payment_date: String::new(),
            disbursed_fen: 0,
            disbursed_by: String::new(),
            disbursed_us: None,
            step_us: now,
            submit_us: now,
            updated_us: now,
            revision: 1,
        };
        self.store.insert_proposal(&mut tx, &proposal).await?;
        let mut revision = 0;
        self.record(
            &mut tx,
            &proposal_id,
            &mut revision,
            &mut proposal.updated_us,
            Change {
                from: None,
                to: ProposalState::Submitted.as_str(),
                actor: &caller.actor,
                reason: format!("submitted into round {}", round.round_id),
                request_id: caller.request_id.as_str(),
            },
            now,
        )
        .await?;
        self.append_event(
            &mut tx,
            EventSpec::proposal(
                npb::EventType::ProposalSubmitted,
                &proposal,
                Some(cmd.requested),
            ),
            now,
        )
        .await?;
        self.commit(tx).await?;
        Ok(Some(proposal_id))
    }

    /// Screens a SUBMITTED proposal with the rules service.
    pub async fn screen_proposal(&self, proposal_id: &str) -> Result<(), ApplicationError> {
        let (seen, enterprise) = {
            let mut conn = self.store.read().await?;
            let Some(seen) = self.store.get_proposal(&mut conn, proposal_id).await? else {
                return Err(ApplicationError::ProposalNotFound);
            };
            let enterprise = self
                .store
                .get_enterprise(&mut conn, &seen.applicant_uscc)
                .await?
                .ok_or(ApplicationError::EnterpriseNotFound)?;
            (seen, enterprise)
        };
        if seen.state != ProposalState::Submitted {
            return Ok(());
        }
        let decision = self
            .peers
            .evaluate_data_infra(rpb::DataInfraProposal {
                proposal_id: seen.proposal_id.clone(),
                applicant_uscc: seen.applicant_uscc.clone(),
                region_code: enterprise.registration_division_code,
                category: rules_category(seen.category),
                requested_amount: Some(fen(seen.requested_fen).to_proto()),
            })
            .await?;
        let summary = decision_summary(&decision)?;
        let mut tx = self.store.begin().await?;
        let Some(mut proposal) = self.store.lock_proposal(&mut tx, proposal_id).await? else {
            return Err(ApplicationError::ProposalNotFound);
        };
        if proposal.state != ProposalState::Submitted {
            return Ok(());
        }
        let now = self.store.now_us(&mut tx).await?;
        proposal.decision = Some(summary.encode_to_vec());
        proposal.step_us = now;
        let (reason, event) = if summary.eligible {
            proposal.state = ProposalState::Eligible;
            (
                format!(
                    "eligible under policy {} {} (decision {})",
                    summary.policy_id, summary.policy_version, summary.decision_id
                ),
                None,
            )
        } else {
            proposal.state = ProposalState::Ineligible;
            let codes = failed_codes(&summary);
            (
                format!(
                    "not eligible under policy {} {} (decision {}): {codes}",
                    summary.policy_id, summary.policy_version, summary.decision_id
                ),
                Some(
                    EventSpec::proposal(npb::EventType::ProposalIneligible, &proposal, None)
                        .with("failed_reasons", codes),
                ),
            )
        };
        let to = proposal.state;
        self.save_proposal(
            &mut tx,
            &mut proposal,
            Some(Change {
                from: Some(ProposalState::Submitted.as_str()),
                to: to.as_str(),
                actor: SYSTEM_ACTOR,
                reason,
                request_id: "",
            }),
            event,
            now,
        )
        .await?;
        self.commit(tx).await?;
        Ok(())
    }

    /// Withdraws a proposal before its round is finalised.
    pub async fn withdraw_proposal(
        &self,
        proposal_id: &str,
        reason: String,
        caller: &Caller,
    ) -> Result<pb::WithdrawProposalResponse, ApplicationError> {
        let mut tx = self.store.begin().await?;
        if let Some(replay) = self
            .store
            .start_request(
                &mut tx,
                &caller.request_id,
                op::WITHDRAW_PROPOSAL,
                &caller.fingerprint,
            )
            .await?
        {
            return Ok(replay);
        }
        let (_round, mut proposal) = self.lock_proposal_and_round(&mut tx, proposal_id).await?;
        if !proposal.state.can_withdraw() {
            return Err(ApplicationError::TransitionNotAllowed(
                proposal.state.to_string(),
            ));
        }
        let now = self.store.now_us(&mut tx).await?;
        let from = proposal.state;
        proposal.state = ProposalState::Withdrawn;
        proposal.withdrawal_reason = reason.clone();
        proposal.step_us = now;
        self.save_proposal(
            &mut tx,
            &mut proposal,
            Some(Change {
                from: Some(from.as_str()),
                to: ProposalState::Withdrawn.as_str(),
                actor: &caller.actor,
                reason: format!("withdrawn by the applicant: {reason}"),
                request_id: caller.request_id.as_str(),
            }),
            None,
            now,
        )
        .await?;
        let response = pb::WithdrawProposalResponse {
            proposal: Some(self.proposal_response(&mut tx, &proposal).await?),
        };
        self.store
            .store_response(&mut tx, &caller.request_id, &response)
            .await?;
        tx.commit().await?;
        Ok(response)
    }

    /// Locks a proposal's round, then the proposal (always in that order), refusing changes
    /// once the round's finalisation has begun.
    async fn lock_proposal_and_round(
        &self,
        tx: &mut Tx,
        proposal_id: &str,
    ) -> Result<(RoundRow, ProposalRow), ApplicationError> {
        let round_id = self
            .store
            .get_proposal(tx, proposal_id)
            .await?
            .ok_or(ApplicationError::ProposalNotFound)?
            .round_id;
        let round = self
            .store
            .lock_round(tx, &round_id)
            .await?
            .ok_or(ApplicationError::RoundNotFound)?;
        if matches!(round.state, RoundState::Finalizing | RoundState::Finalized) {
            return Err(ApplicationError::RoundAlreadyFinalized);
        }
        let proposal = self
            .store
            .lock_proposal(tx, proposal_id)
            .await?
            .ok_or(ApplicationError::ProposalNotFound)?;
        Ok((round, proposal))
    }

    /// Records one expert's score of an ELIGIBLE proposal.
    pub async fn score_proposal(
        &self,
        cmd: ScoreProposal,
        caller: &Caller,
    ) -> Result<pb::ScoreProposalResponse, ApplicationError> {
        let mut tx = self.store.begin().await?;
        if let Some(replay) = self
            .store
            .start_request(
                &mut tx,
                &caller.request_id,
                op::SCORE_PROPOSAL,
                &caller.fingerprint,
            )
            .await?
        {
            return Ok(replay);
        }
        let (_round, mut proposal) = self
            .lock_proposal_and_round(&mut tx, &cmd.proposal_id)
            .await?;
        if proposal.state != ProposalState::Eligible {
            return Err(ApplicationError::TransitionNotAllowed(
                proposal.state.to_string(),
            ));
        }
        if cmd.expert_organization.as_str() == proposal.applicant_uscc {
            return Err(ApplicationError::ConflictOfInterest);
        }
        let scores = self.store.scores(&mut tx, &proposal.proposal_id).await?;
        let replacing = scores.iter().any(|s| s.expert_id == cmd.expert_id);
        if !replacing && scores.len() as i64 >= PROPOSAL_SCORES_MAX {
            return Err(ApplicationError::invalid(
                "expert_id",
                format!("the proposal has its maximum of {PROPOSAL_SCORES_MAX} scores"),
            ));
        }
        let now = self.store.now_us(&mut tx).await?;
        self.store
            .upsert_score(
                &mut tx,
                &proposal.proposal_id,
                &ScoreRow {
                    expert_id: cmd.expert_id.clone(),
                    expert_organization_uscc: cmd.expert_organization.as_str().to_owned(),
                    score: i64::from(cmd.score),
                    comment: cmd.comment.clone(),
                    scored_us: now,
                },
            )
            .await?;
        self.save_proposal(
            &mut tx,
            &mut proposal,
            Some(Change {
                from: Some(ProposalState::Eligible.as_str()),
                to: ProposalState::Eligible.as_str(),
                actor: &caller.actor,
                reason: format!(
                    "{} {} by expert {} of {}",
                    if replacing {
                        "score replaced:"
                    } else {
                        "scored"
                    },
                    cmd.score,
                    cmd.expert_id,
                    cmd.expert_organization
                ),
                request_id: caller.request_id.as_str(),
            }),
            None,
            now,
        )
        .await?;
        let response = pb::ScoreProposalResponse {
            proposal: Some(self.proposal_response(&mut tx, &proposal).await?),
        };
        self.store
            .store_response(&mut tx, &caller.request_id, &response)
            .await?;
        tx.commit().await?;
        Ok(response)
    }

    /// Finalises a CLOSED round: ranking by the rules service, then reserve and commit of
    /// each award in rank order. Resumable: a retry or the reconciler continues where it
    /// stopped, and no award is made twice.
    pub async fn finalize_round(
        &self,
        round_id: &str,
        caller: &Caller,
    ) -> Result<pb::FinalizeSelectionRoundResponse, ApplicationError> {
        let status = {
            let mut conn = self.store.read().await?;
            self.store
                .request_status::<pb::FinalizeSelectionRoundResponse>(
                    &mut conn,
                    &caller.request_id,
                    op::FINALIZE_ROUND,
                    &caller.fingerprint,
                )
                .await?
        };
        let round_id = match status {
            RequestStatus::Replay(response) => return Ok(response),
            RequestStatus::Reused => return Err(ApplicationError::RequestIdReused),
            RequestStatus::InProgress(round_id) => round_id,
            RequestStatus::New => {
                let mut tx = self.store.begin().await?;
                let Some(mut round) = self.store.lock_round(&mut tx, round_id).await? else {
                    return Err(ApplicationError::RoundNotFound);
                };
                let now = self.store.now_us(&mut tx).await?;
                match round.state.effective(round.deadline_us, now) {
                    RoundState::Open => {
                        return Err(ApplicationError::TransitionNotAllowed("OPEN".to_owned()));
                    }
                    RoundState::Finalized => return Err(ApplicationError::RoundAlreadyFinalized),
                    RoundState::Closed | RoundState::Finalizing => {}
                }
                if round.state != RoundState::Finalizing {
                    if round.state == RoundState::Open {
                        round.closed_us = Some(round.deadline_us);
                    }
                    round.state = RoundState::Finalizing;
                    round.finalize_started_us = Some(now);
                    self.store.save_round(&mut tx, &round).await?;
                }
                if self
                    .store
                    .record_progress(
                        &mut tx,
                        &caller.request_id,
                        op::FINALIZE_ROUND,
                        &caller.fingerprint,
                        &round.round_id,
                    )
                    .await?
                {
                    tx.commit().await?;
                }
                // Otherwise a concurrent duplicate of this request started it: finish it.
                round.round_id
            }
        };
        self.complete_finalization(&round_id).await?;
        let mut conn = self.store.read().await?;
        match self
            .store
            .request_status::<pb::FinalizeSelectionRoundResponse>(
                &mut conn,
                &caller.request_id,
                op::FINALIZE_ROUND,
                &caller.fingerprint,
            )
            .await?
        {
            RequestStatus::Replay(response) => Ok(response),
            _ => Err(ApplicationError::RoundAlreadyFinalized),
        }
    }

    /// Runs the remaining steps of a round's finalisation.
    pub async fn complete_finalization(&self, round_id: &str) -> Result<(), ApplicationError> {
        let round = {
            let mut conn = self.store.read().await?;
            self.store
                .get_round(&mut conn, round_id)
                .await?
                .ok_or(ApplicationError::RoundNotFound)?
        };
        if round.state != RoundState::Finalizing {
            return Ok(());
        }
        // 1. Screen what was left unscreened.
        let proposals = {
            let mut conn = self.store.read().await?;
            self.store
                .round_proposals(&mut conn, round_id, false)
                .await?
        };
        for proposal in proposals
            .iter()
            .filter(|p| p.state == ProposalState::Submitted)
        {
            self.screen_proposal(&proposal.proposal_id).await?;
        }
        // 2. Rank once; the ranking is stored and never recomputed.
        let ranking = match &round.ranking {
            Some(bytes) => rpb::RankSelectionRoundResponse::decode(bytes.as_slice())
                .expect("a stored ranking decodes"),
            None => self.rank_round(&round).await?,
        };
        // 3. Award in rank order.
        let mut planned = {
            let mut conn = self.store.read().await?;
            self.store
                .round_proposals(&mut conn, round_id, false)
                .await?
        };
        planned.retain(|p| p.state == ProposalState::Eligible && p.planned_award_fen > 0);
        planned.sort_by_key(|p| p.rank);
        for proposal in planned {
            self.award(&round, &proposal).await?;
        }
        // 4. Everyone else is not selected; the round is final.
        self.close_finalization(round_id, &ranking).await
    }

    async fn rank_round(
        &self,
        round: &RoundRow,
    ) -> Result<rpb::RankSelectionRoundResponse, ApplicationError> {
        let proposals = {
            let mut conn = self.store.read().await?;
            let mut scored = Vec::new();
            for proposal in self
                .store
                .round_proposals(&mut conn, &round.round_id, false)
                .await?
            {
                if proposal.state != ProposalState::Eligible {
                    continue;
                }
                let scores = self.store.scores(&mut conn, &proposal.proposal_id).await?;
                if !scores.is_empty() {
                    scored.push((proposal, scores));
                }
            }
            scored
        };
        let ranking = if proposals.is_empty() {
            rpb::RankSelectionRoundResponse::default()
        } else {
            let available = self.peers.available(&round.pool_id).await?;
            let request = rpb::RankSelectionRoundRequest {
                pool_available: Some(available.to_proto()),
                candidates: proposals
                    .iter()
                    .map(|(proposal, scores)| rpb::SelectionCandidate {
                        proposal_id: proposal.proposal_id.clone(),
                        requested_amount: Some(fen(proposal.requested_fen).to_proto()),
                        expert_scores: scores.iter().map(|s| s.score as u32).collect(),
                        mean_score: String::new(),
                        submit_time: Some(timestamp_from_us(proposal.submit_us)),
                    })
                    .collect(),
                policy_version: String::new(),
            };
            let ranking = self.peers.rank(request).await?;
            check_ranking(&ranking, &proposals, available)?;
            ranking
        };
        let decision_id = if ranking.awards.is_empty() {
            String::new()
        } else {
            use sha2::Digest;
            format!(
                "ranking-{}",
                &hex::encode(sha2::Sha256::digest(ranking.encode_to_vec()))[..RANKING_ID_HEX_LEN]
            )
        };
        let mut tx = self.store.begin().await?;
        let Some(mut locked) = self.store.lock_round(&mut tx, &round.round_id).await? else {
            return Err(ApplicationError::RoundNotFound);
        };
        if let Some(bytes) = &locked.ranking {
            // A concurrent finaliser ranked first; its ranking stands.
            return Ok(rpb::RankSelectionRoundResponse::decode(bytes.as_slice())
                .expect("a stored ranking decodes"));
        }
        locked.ranking = Some(ranking.encode_to_vec());
        locked.ranking_decision_id = decision_id;
        self.store.save_round(&mut tx, &locked).await?;
        let now = self.store.now_us(&mut tx).await?;
        for award in &ranking.awards {
            if let Some(mut proposal) = self
                .store
                .lock_proposal(&mut tx, &award.proposal_id)
                .await?
            {
                proposal.rank = i64::from(award.rank);
                proposal.planned_award_fen = money("rules", &award.awarded)?.fen();
                proposal.step_us = now;
                self.store.save_proposal(&mut tx, &proposal).await?;
            }
        }
        tx.commit().await?;
        Ok(ranking)
    }

    /// Reserves and commits one planned award (replaying both calls after a crash) and
    /// records it.
    async fn award(&self, round: &RoundRow, seen: &ProposalRow) -> Result<(), ApplicationError> {
        let amount = fen(seen.planned_award_fen);
        let reserved = self
            .peers
            .reserve(
                &RequestId::derived(&seen.proposal_id, "award-reserve"),
                &round.pool_id,
                &seen.applicant_uscc,
                amount,
                &seen.proposal_id,
                0,
            )
            .await;
        let reservation = match reserved {
            Ok(reservation) => reservation,
            Err(PeerError::Refused { reason, .. })
                if matches!(
                    reason.as_str(),
                    "POOL_EXHAUSTED" | "BENEFICIARY_CAP_EXCEEDED" | "RESERVATION_CAP_EXCEEDED"
                ) =>
            {
                return self
                    .not_selected_at_award(
                        round,
                        seen,
                        &format!("the pool could not hold the award ({reason})"),
                    )
                    .await;
            }
            Err(error) => return Err(error.into()),
        };
        let committed = self
            .peers
            .commit(
                &RequestId::derived(&seen.proposal_id, "award-commit"),
                &reservation.reservation_id,
                amount,
            )
            .await?;
        let committed_amount = money("budget", &committed.committed_amount)?;
        let mut tx = self.store.begin().await?;
        let Some(mut locked_round) = self.store.lock_round(&mut tx, &round.round_id).await? else {
            return Err(ApplicationError::RoundNotFound);
        };
        let Some(mut proposal) = self.store.lock_proposal(&mut tx, &seen.proposal_id).await? else {
            return Err(ApplicationError::ProposalNotFound);
        };
        if proposal.state != ProposalState::Eligible {
            return Ok(());
        }
        let now = self.store.now_us(&mut tx).await?;
        proposal.state = ProposalState::Awarded;
        proposal.reservation_id = Some(reservation.reservation_id.clone());
        proposal.awarded_fen = committed_amount.fen();
        proposal.step_us = now;
        locked_round.award_count += 1;
        locked_round.awarded_total_fen += committed_amount.fen();
        self.store.save_round(&mut tx, &locked_round).await?;
        let partly = if committed_amount.fen() < proposal.requested_fen {
            format!(" (partly: {} requested)", fen(proposal.requested_fen))
        } else {
            String::new()
        };
        let event = EventSpec::proposal(
            npb::EventType::ProposalAwarded,
            &proposal,
            Some(committed_amount),
        )
        .with("rank", proposal.rank.to_string())
        .with("reservation_id", reservation.reservation_id.clone());
        self.save_proposal(
            &mut tx,
            &mut proposal,
            Some(Change {
                from: Some(ProposalState::Eligible.as_str()),
                to: ProposalState::Awarded.as_str(),
                actor: SYSTEM_ACTOR,
                reason: format!(
                    "awarded {committed_amount} at rank {}{partly} in round {}",
                    seen.rank, round.round_id
                ),
                request_id: "",
            }),
            Some(event),
            now,
        )
        .await?;
        self.commit(tx).await?;
        Ok(())
    }

    async fn not_selected_at_award(
        &self,
        round: &RoundRow,
        seen: &ProposalRow,
        why: &str,
    ) -> Result<(), ApplicationError> {
        let mut tx = self.store.begin().await?;
        let Some(_round) = self.store.lock_round(&mut tx, &round.round_id).await? else {
            return Err(ApplicationError::RoundNotFound);
        };
        let Some(mut proposal) = self.store.lock_proposal(&mut tx, &seen.proposal_id).await? else {
            return Err(ApplicationError::ProposalNotFound);
        };
        if proposal.state != ProposalState::Eligible {
            return Ok(());
        }
        let now = self.store.now_us(&mut tx).await?;
        proposal.state = ProposalState::NotSelected;
        proposal.planned_award_fen = 0;
        proposal.step_us = now;
        let event = EventSpec::proposal(npb::EventType::ProposalNotSelected, &proposal, None)
            .with("reason", why.to_owned());
        self.save_proposal(
            &mut tx,
            &mut proposal,
            Some(Change {
                from: Some(ProposalState::Eligible.as_str()),
                to: ProposalState::NotSelected.as_str(),
                actor: SYSTEM_ACTOR,
                reason: format!("not selected at rank {}: {why}", seen.rank),
                request_id: "",
            }),
            Some(event),
            now,
        )
        .await?;
        self.commit(tx).await?;
        Ok(())
    }

    async fn close_finalization(
        &self,
        round_id: &str,
        ranking: &rpb::RankSelectionRoundResponse,
    ) -> Result<(), ApplicationError> {
        let mut tx = self.store.begin().await?;
        let Some(mut round) = self.store.lock_round(&mut tx, round_id).await? else {
            return Err(ApplicationError::RoundNotFound);
        };
        if round.state != RoundState::Finalizing {
            return Ok(());
        }
        let now = self.store.now_us(&mut tx).await?;
        let proposals = self.store.round_proposals(&mut tx, round_id, true).await?;
        let mut awards = Vec::new();
        let mut not_selected = 0;
        for mut proposal in proposals {
            match proposal.state {
                ProposalState::Eligible | ProposalState::Submitted => {
                    let from = proposal.state;
                    let why = ranking
                        .awards
                        .iter()
                        .find(|award| award.proposal_id == proposal.proposal_id)
                        .map(|award| format!("ranked {}: {}", award.rank, award.reason))
                        .unwrap_or_else(|| "not ranked: no expert scored it".to_owned());
                    proposal.state = ProposalState::NotSelected;
                    proposal.step_us = now;
                    let event =
                        EventSpec::proposal(npb::EventType::ProposalNotSelected, &proposal, None)
                            .with("reason", why.clone());
                    self.save_proposal(
                        &mut tx,
                        &mut proposal,
                        Some(Change {
                            from: Some(from.as_str()),
                            to: ProposalState::NotSelected.as_str(),
                            actor: SYSTEM_ACTOR,
                            reason: format!(
                                "not selected when round {round_id} was finalised: {why}"
                            ),
                            request_id: "",
                        }),
                        Some(event),
                        now,
                    )
                    .await?;
                    not_selected += 1;
                }
                ProposalState::NotSelected => not_selected += 1,
                ProposalState::Awarded | ProposalState::Disbursed => {
                    let scores = self.store.scores(&mut tx, &proposal.proposal_id).await?;
                    awards.push(pb::Award {
                        proposal_id: proposal.proposal_id.clone(),
                        applicant_uscc: proposal.applicant_uscc.clone(),
                        rank: u32::try_from(proposal.rank).unwrap_or_default(),
                        score_total: scores.iter().map(|s| s.score as u32).sum(),
                        score_count: scores.len() as u32,
                        requested_amount: Some(fen(proposal.requested_fen).to_proto()),
                        awarded_amount: Some(fen(proposal.awarded_fen).to_proto()),
                        partially_funded: proposal.awarded_fen < proposal.requested_fen,
                        reservation_id: proposal.reservation_id.clone().unwrap_or_default(),
                    });
                }
                ProposalState::Ineligible | ProposalState::Withdrawn => {}
            }
        }
        awards.sort_by_key(|award| award.rank);
        assert_eq!(
            awards.len() as i64,
            round.award_count,
            "the round counts exactly its awarded proposals"
        );
        round.state = RoundState::Finalized;
        round.finalized_us = Some(now);
        self.store.save_round(&mut tx, &round).await?;
        self.append_event(
            &mut tx,
            EventSpec {
                event_type: npb::EventType::RoundFinalized,
                program: npb::Program::DataInfra,
                application_id: String::new(),
                enterprise_uscc: String::new(),
                round_id: round_id.to_owned(),
                amount: Some(fen(round.awarded_total_fen)),
                details: vec![
                    ("award_count", round.award_count.to_string()),
                    ("ranking_decision_id", round.ranking_decision_id.clone()),
                ],
            },
            now,
        )
        .await?;
        let response = pb::FinalizeSelectionRoundResponse {
            round: Some(self.round_response(&mut tx, &round).await?),
            awards,
            not_selected_count: not_selected,
        };
        let requests: Vec<String> = sqlx::query_scalar(
            "SELECT request_id FROM request_progress WHERE operation = $1 AND subject_id = $2 \
             ORDER BY request_id",
        )
        .bind(op::FINALIZE_ROUND)
        .bind(round_id)
        .fetch_all(&mut *tx)
        .await
        .map_err(DbError::from)?;
        for request_id in requests {
            self.finish_progress(&mut tx, &request_id, op::FINALIZE_ROUND, &response)
                .await?;
        }
        self.commit(tx).await?;
        Ok(())
    }

    /// Records the payment of an awarded proposal.
    pub async fn disburse_proposal(
        &self,
        cmd: Disbursement,
        caller: &Caller,
    ) -> Result<pb::RecordProposalDisbursementResponse, ApplicationError> {
        let mut tx = self.store.begin().await?;
        if let Some(replay) = self
            .store
            .start_request(
                &mut tx,
                &caller.request_id,
                op::DISBURSE_PROPOSAL,
                &caller.fingerprint,
            )
            .await?
        {
            return Ok(replay);
        }
        let Some(mut proposal) = self.store.lock_proposal(&mut tx, &cmd.id).await? else {
            return Err(ApplicationError::ProposalNotFound);
        };
        if proposal.state != ProposalState::Awarded {
            return Err(ApplicationError::TransitionNotAllowed(
                proposal.state.to_string(),
            ));
        }
        let now = self.store.now_us(&mut tx).await?;
        check_payment(&cmd, proposal.awarded_fen, now)?;
        proposal.state = ProposalState::Disbursed;
        proposal.payment_reference = cmd.payment_reference.clone();
        proposal.payment_date = date_text(cmd.payment_date);
        proposal.disbursed_fen = cmd.amount.fen();
        proposal.disbursed_by = caller.actor.clone();
        proposal.disbursed_us = Some(now);
        proposal.step_us = now;
        let event = EventSpec::proposal(
            npb::EventType::ProposalDisbursed,
            &proposal,
            Some(cmd.amount),
        )
        .with("payment_reference", cmd.payment_reference.clone());
        let payment_date = proposal.payment_date.clone();
        self.save_proposal(
            &mut tx,
            &mut proposal,
            Some(Change {
                from: Some(ProposalState::Awarded.as_str()),
                to: ProposalState::Disbursed.as_str(),
                actor: &caller.actor,
                reason: format!(
                    "{} paid on {payment_date} (payment {})",
                    cmd.amount, cmd.payment_reference
                ),
                request_id: caller.request_id.as_str(),
            }),
            Some(event),
            now,
        )
        .await?;
        let response = pb::RecordProposalDisbursementResponse {
            proposal: Some(self.proposal_response(&mut tx, &proposal).await?),
        };
        self.store
            .store_response(&mut tx, &caller.request_id, &response)
            .await?;
        self.commit(tx).await?;
        Ok(response)
    }

    // ----------------------------------------------------------------------------------------
    // Background work
    // ----------------------------------------------------------------------------------------

    /// One pass of the reconciler: finishes half-done steps older than the grace period,
    /// notices expired holds, serves waitlists, screens proposals and completes
    /// finalisations. Returns how many items it looked at.
    pub async fn reconcile_once(&self) -> Result<usize, ApplicationError> {
        let now = {
            let mut conn = self.store.read().await?;
            self.store.now_us(&mut conn).await?
        };
        let stale_before = now - self.settings.reconcile_grace_us;
        let mut visited = 0;
        for claim_id in self
            .store
            .claims_with_unfinished_steps(stale_before, RECONCILE_BATCH_MAX)
            .await?
        {
            visited += 1;
            if let Err(error) = self.drive_claim(&claim_id, true).await {
                tracing::warn!(%claim_id, %error, "reconciling a claim failed; will retry");
            }
        }
        for claim_id in self
            .store
            .holds_past_expiry(now, RECONCILE_BATCH_MAX)
            .await?
        {
            visited += 1;
            if let Err(error) = self.check_hold(&claim_id).await {
                tracing::warn!(%claim_id, %error, "checking a hold failed; will retry");
            }
        }
        for pool_id in self.store.waitlisted_pools().await? {
            visited += 1;
            if let Err(error) = self.promote(&pool_id).await {
                tracing::warn!(%pool_id, %error, "serving the waitlist failed; will retry");
            }
        }
        for proposal_id in self
            .store
            .proposals_unscreened(stale_before, RECONCILE_BATCH_MAX)
            .await?
        {
            visited += 1;
            if let Err(error) = self.screen_proposal(&proposal_id).await {
                tracing::warn!(%proposal_id, %error, "screening a proposal failed; will retry");
            }
        }
        for round_id in self.store.rounds_finalizing(stale_before).await? {
            visited += 1;
            if let Err(error) = self.complete_finalization(&round_id).await {
                tracing::warn!(%round_id, %error, "finalising a round failed; will retry");
            }
        }
        Ok(visited)
    }

    /// Delivers undelivered outbox events in order until one fails. Returns how many were
    /// delivered and whether a delivery failed (so the relay backs off).
    pub async fn relay_once(&self) -> Result<(usize, bool), ApplicationError> {
        let events = self.store.undelivered_events(RELAY_BATCH_MAX).await?;
        let mut delivered = 0;
        for row in events {
            let event =
                npb::Event::decode(row.event.as_slice()).expect("the outbox holds encoded events");
            match self.peers.publish(event).await {
                Ok(()) => {
                    self.store.mark_event_done(row.outbox_seq, None).await?;
                    delivered += 1;
                }
                Err(PeerError::Refused { code, reason, .. })
                    if matches!(
                        code,
                        tonic::Code::InvalidArgument | tonic::Code::AlreadyExists
                    ) =>
                {
                    // The notification service will never accept this event as it is: keep it
                    // in the outbox as dead-lettered rather than blocking every later event.
                    let error = format!("{code:?} {reason}");
                    tracing::error!(event_id = %row.event_id, %error, "event refused; dead-lettered");
                    self.store
                        .mark_event_done(row.outbox_seq, Some(&error))
                        .await?;
                }
                Err(error) => {
                    let text = match &error {
                        PeerError::Unavailable(service) => format!("{service} unavailable"),
                        PeerError::Refused { code, reason, .. } => format!("{code:?} {reason}"),
                    };
                    self.store.mark_event_failed(row.outbox_seq, &text).await?;
                    return Ok((delivered, true));
                }
            }
        }
        Ok((delivered, false))
    }
}

/// Checks a payment against the approved or awarded amount and the calendar.
fn check_payment(
    cmd: &Disbursement,
    expected_fen: i64,
    now_us: i64,
) -> Result<(), ApplicationError> {
    let mut violations = Vec::new();
    if cmd.amount.fen() != expected_fen {
        violations.push(subsidy_proto::status::FieldViolation::new(
            "amount",
            format!(
                "must equal the approved or awarded amount {}",
                fen(expected_fen)
            ),
        ));
    }
    if cmd.payment_date > shanghai_today(now_us) {
        violations.push(subsidy_proto::status::FieldViolation::new(
            "payment_date",
            "must not be in the future (Asia/Shanghai)",
        ));
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(ApplicationError::Invalid(violations))
    }
}

/// Checks what the rules service ranked against what it was asked: every award is a
/// candidate's, within its request, and together within the pool.
fn check_ranking(
    ranking: &rpb::RankSelectionRoundResponse,
    candidates: &[(ProposalRow, Vec<ScoreRow>)],
    available: Money,
) -> Result<(), ApplicationError> {
    let unexpected = |reason: &str| ApplicationError::UpstreamUnexpected {
        service: "rules",
        code: "Ok".into(),
        reason: reason.to_owned(),
    };
    let mut total = Money::ZERO;
    for award in &ranking.awards {
        let Some((proposal, _)) = candidates
            .iter()
            .find(|(p, _)| p.proposal_id == award.proposal_id)
        else {
            return Err(unexpected("RANKING_NAMES_AN_UNKNOWN_PROPOSAL"));
        };
        let awarded = money("rules", &award.awarded)?;
        if awarded.fen() > proposal.requested_fen {
            return Err(unexpected("RANKING_AWARDS_MORE_THAN_REQUESTED"));
        }
        total = total
            .checked_add(awarded)
            .ok_or_else(|| unexpected("RANKING_TOTAL_OUT_OF_RANGE"))?;
    }
    if total > available {
        return Err(unexpected("RANKING_AWARDS_MORE_THAN_THE_POOL"));
    }
    Ok(())
}
