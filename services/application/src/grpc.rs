//! Wire ↔ domain conversion and error classification for
//! `subsidy.application.v1.ApplicationService`.

use chrono::NaiveDate;
use subsidy_common::db::{DbError, timestamp_from_us};
use subsidy_common::idempotency::fingerprint;
use subsidy_common::paging::{decode_token, encode_token, page_size};
use subsidy_common::{Money, RequestId, Uscc};
use subsidy_proto::application as pb;
use subsidy_proto::google::r#type::{Date as ProtoDate, Money as ProtoMoney};
use subsidy_proto::status::{self as st, FieldViolation};
use tonic::{Code, Request, Response, Status};

use crate::domain::{
    ATTACHMENT_SIZE_BYTES_MAX, ATTACHMENTS_MAX, ApplicationError, BenefitRating,
    CONTRACT_NUMBER_LEN_MAX, ClaimState, DESCRIPTION_LEN_MAX, EMAIL_LEN_MAX, IDENTIFIER_LEN_MAX,
    NAME_LEN_MAX, NOTE_LEN_MAX, PHONE_LEN_MAX, ProposalCategory, ProposalState, REASON_LEN_MAX,
    RELATIONSHIP_LEN_MAX, RejectionReason, RoundState, SCORE_MAX, is_division_code, is_email,
    is_file_name, is_phone, is_sha256_hex,
};
use crate::storage::{
    ClaimFilter, ClaimRow, EnterpriseRow, HistoryRow, ProposalFilter, ProposalRow, RoundRow,
    ScoreRow,
};
use crate::workflow::{
    ApproveClaim, Caller, CreateRound, Disbursement, RegisterEnterprise, RejectClaim,
    ScoreProposal, SubmitClaim, SubmitProposal, Workflow, decision_of, decode_attachments, op,
};

/// The `ErrorInfo` domain of every application error.
pub const DOMAIN: &str = "subsidy.application";
/// Metadata key naming the caller, recorded in histories.
pub const ACTOR_METADATA_KEY: &str = "x-subsidy-actor";
/// Longest accepted actor name, in bytes.
const ACTOR_LEN_MAX: usize = 128;
/// Default and largest page sizes.
const ENTERPRISES_PAGE_DEFAULT: u32 = 50;
const ENTERPRISES_PAGE_MAX: u32 = 500;
const CLAIMS_PAGE_DEFAULT: u32 = 50;
const CLAIMS_PAGE_MAX: u32 = 500;
const ROUNDS_PAGE_DEFAULT: u32 = 50;
const ROUNDS_PAGE_MAX: u32 = 500;
const PROPOSALS_PAGE_DEFAULT: u32 = 50;
const PROPOSALS_PAGE_MAX: u32 = 500;
const HISTORY_PAGE_DEFAULT: u32 = 100;
const HISTORY_PAGE_MAX: u32 = 1000;
/// Prefixes of server-assigned identifiers.
const CLAIM_PREFIX: &str = "claim-";
const PROPOSAL_PREFIX: &str = "proposal-";

impl From<ApplicationError> for Status {
    /// The one place where application errors become gRPC statuses. Database and peer
    /// details are logged here and never sent to the caller.
    fn from(error: ApplicationError) -> Status {
        let (code, reason) = match &error {
            ApplicationError::Invalid(violations) => {
                return st::invalid_argument(DOMAIN, violations);
            }
            ApplicationError::ApprovedAmountExceedsContract => {
                return st::invalid_argument_with_reason(
                    DOMAIN,
                    "APPROVED_AMOUNT_EXCEEDS_CONTRACT",
                    &[FieldViolation::new(
                        "verified_paid_amount",
                        "must not exceed the contract total",
                    )],
                );
            }
            ApplicationError::PoolNotFound => {
                return st::invalid_argument_with_reason(
                    DOMAIN,
                    "POOL_NOT_FOUND",
                    &[FieldViolation::new("pool_id", "no such pool")],
                );
            }
            ApplicationError::EnterpriseNotFound => (Code::NotFound, "ENTERPRISE_NOT_FOUND"),
            ApplicationError::EnterpriseAlreadyRegistered => {
                (Code::AlreadyExists, "ENTERPRISE_ALREADY_REGISTERED")
            }
            ApplicationError::ClaimNotFound => (Code::NotFound, "CLAIM_NOT_FOUND"),
            ApplicationError::DuplicateContract => (Code::AlreadyExists, "DUPLICATE_CONTRACT"),
            ApplicationError::TransitionNotAllowed(_) => {
                (Code::FailedPrecondition, "TRANSITION_NOT_ALLOWED")
            }
            ApplicationError::ReservationExpired => {
                (Code::FailedPrecondition, "RESERVATION_EXPIRED")
            }
            ApplicationError::NotEligibleOnRecheck => {
                (Code::FailedPrecondition, "NOT_ELIGIBLE_ON_RECHECK")
            }
            ApplicationError::RoundNotFound => (Code::NotFound, "ROUND_NOT_FOUND"),
            ApplicationError::RoundClosed => (Code::FailedPrecondition, "ROUND_CLOSED"),
            ApplicationError::RoundAlreadyFinalized => {
                (Code::FailedPrecondition, "ROUND_ALREADY_FINALIZED")
            }
            ApplicationError::ProposalNotFound => (Code::NotFound, "PROPOSAL_NOT_FOUND"),
            ApplicationError::ConflictOfInterest => {
                (Code::FailedPrecondition, "CONFLICT_OF_INTEREST")
            }
            ApplicationError::RequestIdReused => (Code::AlreadyExists, "REQUEST_ID_REUSED"),
            ApplicationError::UpstreamUnavailable(service) => {
                tracing::warn!(service, "peer unavailable");
                return st::with_reason(
                    Code::Unavailable,
                    DOMAIN,
                    "UPSTREAM_UNAVAILABLE",
                    format!(
                        "the {service} service is unavailable; what was recorded stays recorded, \
                         retry with the same request_id"
                    ),
                );
            }
            ApplicationError::UpstreamUnexpected { .. } => {
                tracing::error!(%error, "unexpected answer from a peer");
                return st::with_reason(Code::Internal, DOMAIN, "INTERNAL", "internal error");
            }
            ApplicationError::Db(DbError::Unavailable(source)) => {
                tracing::warn!(error = %source, "database unavailable");
                return st::with_reason(
                    Code::Unavailable,
                    DOMAIN,
                    "STORAGE_UNAVAILABLE",
                    "the application database is unavailable; retry with the same request_id",
                );
            }
            ApplicationError::Db(other) => {
                tracing::error!(error = %other, "application storage failed");
                return st::with_reason(Code::Internal, DOMAIN, "INTERNAL", "internal error");
            }
        };
        st::with_reason(code, DOMAIN, reason, error.to_string())
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing requests
// ---------------------------------------------------------------------------------------------

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

    fn uscc(&mut self, field: &str, text: &str) -> Option<Uscc> {
        Uscc::parse(text)
            .map_err(|e| self.add(field, e.to_string()))
            .ok()
    }

    fn amount(&mut self, field: &str, value: Option<&ProtoMoney>) -> Option<Money> {
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

    /// A required text of 1 to `max` characters, without control characters.
    fn text(&mut self, field: &str, text: &str, max: usize) -> Option<String> {
        if text.trim().is_empty() {
            self.add(field, "is required");
            None
        } else {
            self.optional_text(field, text, max)
        }
    }

    /// An optional text of at most `max` characters, without control characters other than
    /// line breaks and tabs.
    fn optional_text(&mut self, field: &str, text: &str, max: usize) -> Option<String> {
        if text.chars().count() > max {
            self.add(field, format!("must be at most {max} characters"));
            None
        } else if text
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            self.add(field, "must not contain control characters");
            None
        } else {
            Some(text.to_owned())
        }
    }

    fn id(&mut self, field: &str, text: &str) -> Option<String> {
        if text.is_empty() {
            self.add(field, "is required");
            None
        } else if text.len() > IDENTIFIER_LEN_MAX || !text.bytes().all(|b| b.is_ascii_graphic()) {
            self.add(
                field,
                format!("must be at most {IDENTIFIER_LEN_MAX} printable ASCII characters"),
            );
            None
        } else {
            Some(text.to_owned())
        }
    }

    fn date(&mut self, field: &str, value: Option<&ProtoDate>) -> Option<NaiveDate> {
        let Some(value) = value else {
            self.add(field, "is required");
            return None;
        };
        let date = u32::try_from(value.month)
            .ok()
            .zip(u32::try_from(value.day).ok())
            .and_then(|(month, day)| NaiveDate::from_ymd_opt(value.year, month, day));
        if date.is_none() || value.year < 1 {
            self.add(field, "must be a full calendar date");
            return None;
        }
        date
    }

    fn timestamp_us(&mut self, field: &str, value: Option<&prost_types::Timestamp>) -> Option<i64> {
        let value = value?;
        if !(0..1_000_000_000).contains(&value.nanos) {
            self.add(field, "nanos must be 0 to 999,999,999");
            return None;
        }
        match value
            .seconds
            .checked_mul(1_000_000)
            .and_then(|us| us.checked_add(i64::from(value.nanos) / 1_000))
        {
            Some(us) => Some(us),
            None => {
                self.add(field, "is out of range");
                None
            }
        }
    }

    fn attachments(&mut self, field: &str, attachments: &[pb::AttachmentDigest]) {
        if attachments.len() > ATTACHMENTS_MAX {
            self.add(field, format!("at most {ATTACHMENTS_MAX} attachments"));
            return;
        }
        for (i, attachment) in attachments.iter().enumerate() {
            if !is_file_name(&attachment.file_name) {
                self.add(
                    &format!("{field}[{i}].file_name"),
                    "must be a file name of 1 to 255 characters without directories",
                );
            }
            if !is_sha256_hex(&attachment.sha256_hex) {
                self.add(
                    &format!("{field}[{i}].sha256_hex"),
                    "must be 64 lower-case hex digits",
                );
            }
            if !(1..=ATTACHMENT_SIZE_BYTES_MAX).contains(&attachment.size_bytes) {
                self.add(
                    &format!("{field}[{i}].size_bytes"),
                    "must be positive and at most 1 GiB",
                );
            }
        }
    }

    fn finish(self) -> Result<(), Status> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApplicationError::Invalid(self.0).into())
        }
    }
}

fn actor<T>(request: &Request<T>) -> String {
    request
        .metadata()
        .get(ACTOR_METADATA_KEY)
        .and_then(|value| value.to_str().ok())
        .filter(|value| !value.is_empty() && value.len() <= ACTOR_LEN_MAX)
        .unwrap_or("anonymous")
        .to_owned()
}

fn caller(
    request_id: RequestId,
    operation: &str,
    message: &impl prost::Message,
    actor: String,
) -> Caller {
    Caller {
        request_id,
        fingerprint: fingerprint(operation, message),
        actor,
    }
}

fn page_error(field: &str, error: impl ToString) -> Status {
    ApplicationError::invalid(field, error.to_string()).into()
}

/// Decodes a `(µs, id)` keyset token.
fn keyset(kind: &str, token: &str) -> Result<Option<(i64, String)>, Status> {
    let Some(key) = decode_token(kind, token).map_err(|e| page_error("page_token", e))? else {
        return Ok(None);
    };
    key.split_once('/')
        .and_then(|(us, id)| Some((us.parse::<i64>().ok()?, id.to_owned())))
        .map(Some)
        .ok_or_else(|| page_error("page_token", "page_token is not valid"))
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

fn claim_state_from_proto(value: i32) -> Result<Option<ClaimState>, ()> {
    Ok(match pb::ClaimState::try_from(value).map_err(|_| ())? {
        pb::ClaimState::Unspecified => None,
        pb::ClaimState::Submitted => Some(ClaimState::Submitted),
        pb::ClaimState::Ineligible => Some(ClaimState::Ineligible),
        pb::ClaimState::Waitlisted => Some(ClaimState::Waitlisted),
        pb::ClaimState::PendingReview => Some(ClaimState::PendingReview),
        pb::ClaimState::Approved => Some(ClaimState::Approved),
        pb::ClaimState::Rejected => Some(ClaimState::Rejected),
        pb::ClaimState::Withdrawn => Some(ClaimState::Withdrawn),
        pb::ClaimState::Expired => Some(ClaimState::Expired),
        pb::ClaimState::Disbursed => Some(ClaimState::Disbursed),
    })
}

fn proposal_state_from_proto(value: i32) -> Result<Option<ProposalState>, ()> {
    Ok(match pb::ProposalState::try_from(value).map_err(|_| ())? {
        pb::ProposalState::Unspecified => None,
        pb::ProposalState::Submitted => Some(ProposalState::Submitted),
        pb::ProposalState::Ineligible => Some(ProposalState::Ineligible),
        pb::ProposalState::Eligible => Some(ProposalState::Eligible),
        pb::ProposalState::Awarded => Some(ProposalState::Awarded),
        pb::ProposalState::NotSelected => Some(ProposalState::NotSelected),
        pb::ProposalState::Withdrawn => Some(ProposalState::Withdrawn),
        pb::ProposalState::Disbursed => Some(ProposalState::Disbursed),
    })
}

// ---------------------------------------------------------------------------------------------
// Domain to wire
// ---------------------------------------------------------------------------------------------

fn money(fen: i64) -> Option<ProtoMoney> {
    Some(
        Money::from_fen(fen)
            .expect("stored amounts are valid money")
            .to_proto(),
    )
}

fn proto_date(text: &str) -> Option<ProtoDate> {
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    use chrono::Datelike;
    Some(ProtoDate {
        year: date.year(),
        month: date.month() as i32,
        day: date.day() as i32,
    })
}

/// The wire form of an enterprise.
pub fn enterprise_to_proto(row: &EnterpriseRow) -> pb::Enterprise {
    pb::Enterprise {
        uscc: row.uscc.clone(),
        name: row.name.clone(),
        contact_email: row.contact_email.clone(),
        contact_phone: row.contact_phone.clone(),
        registration_division_code: row.registration_division_code.clone(),
        create_time: Some(timestamp_from_us(row.created_us)),
        update_time: Some(timestamp_from_us(row.updated_us)),
    }
}

fn claim_state_to_proto(state: ClaimState) -> pb::ClaimState {
    match state {
        ClaimState::Submitted => pb::ClaimState::Submitted,
        ClaimState::Ineligible => pb::ClaimState::Ineligible,
        ClaimState::Waitlisted => pb::ClaimState::Waitlisted,
        ClaimState::PendingReview => pb::ClaimState::PendingReview,
        ClaimState::Approved => pb::ClaimState::Approved,
        ClaimState::Rejected => pb::ClaimState::Rejected,
        ClaimState::Withdrawn => pb::ClaimState::Withdrawn,
        ClaimState::Expired => pb::ClaimState::Expired,
        ClaimState::Disbursed => pb::ClaimState::Disbursed,
    }
}

fn proposal_state_to_proto(state: ProposalState) -> pb::ProposalState {
    match state {
        ProposalState::Submitted => pb::ProposalState::Submitted,
        ProposalState::Ineligible => pb::ProposalState::Ineligible,
        ProposalState::Eligible => pb::ProposalState::Eligible,
        ProposalState::Awarded => pb::ProposalState::Awarded,
        ProposalState::NotSelected => pb::ProposalState::NotSelected,
        ProposalState::Withdrawn => pb::ProposalState::Withdrawn,
        ProposalState::Disbursed => pb::ProposalState::Disbursed,
    }
}

fn rating_to_proto(rating: BenefitRating) -> pb::BenefitRating {
    match rating {
        BenefitRating::Unspecified => pb::BenefitRating::Unspecified,
        BenefitRating::High => pb::BenefitRating::High,
        BenefitRating::Medium => pb::BenefitRating::Medium,
        BenefitRating::Low => pb::BenefitRating::Low,
    }
}

fn rejection_to_proto(text: &str) -> pb::ClaimRejectionReason {
    match RejectionReason::parse(text) {
        None => pb::ClaimRejectionReason::Unspecified,
        Some(RejectionReason::ContractNotVerified) => pb::ClaimRejectionReason::ContractNotVerified,
        Some(RejectionReason::PaymentNotVerified) => pb::ClaimRejectionReason::PaymentNotVerified,
        Some(RejectionReason::ComputeNotEligible) => pb::ClaimRejectionReason::ComputeNotEligible,
        Some(RejectionReason::RelatedPartyTransaction) => {
            pb::ClaimRejectionReason::RelatedPartyTransaction
        }
        Some(RejectionReason::InsufficientBenefit) => pb::ClaimRejectionReason::InsufficientBenefit,
        Some(RejectionReason::FalseDeclaration) => pb::ClaimRejectionReason::FalseDeclaration,
        Some(RejectionReason::Other) => pb::ClaimRejectionReason::Other,
    }
}

fn category_to_proto(category: ProposalCategory) -> pb::ProposalCategory {
    match category {
        ProposalCategory::TrustedDataSpace => pb::ProposalCategory::TrustedDataSpace,
        ProposalCategory::DataField => pb::ProposalCategory::DataField,
        ProposalCategory::DataAnnotationBase => pb::ProposalCategory::DataAnnotationBase,
        ProposalCategory::OtherDataInfrastructure => pb::ProposalCategory::OtherDataInfrastructure,
    }
}

fn disbursement(
    reference: &str,
    date: &str,
    fen: i64,
    by: &str,
    at: Option<i64>,
) -> Option<pb::Disbursement> {
    at.map(|at| pb::Disbursement {
        payment_reference: reference.to_owned(),
        payment_date: proto_date(date),
        amount: money(fen),
        recorded_by: by.to_owned(),
        record_time: Some(timestamp_from_us(at)),
    })
}

/// The wire form of a claim; `waitlist_position` is 0 unless WAITLISTED.
pub fn claim_to_proto(row: &ClaimRow, waitlist_position: i64) -> pb::Claim {
    use prost::Message;
    pb::Claim {
        claim_id: row.claim_id.clone(),
        state: claim_state_to_proto(row.state) as i32,
        enterprise_uscc: row.enterprise_uscc.clone(),
        contract: Some(
            pb::ComputeContract::decode(row.contract.as_slice())
                .expect("a stored contract is a valid ComputeContract"),
        ),
        decision: decision_of(&row.decision),
        pool_id: row.pool_id.clone(),
        reservation_id: row.reservation_id.clone().unwrap_or_default(),
        reserved_amount: money(row.reserved_fen),
        approved_amount: money(row.approved_fen),
        disbursed_amount: money(row.disbursed_fen),
        waitlist_position,
        verified_paid_amount: row
            .verified_paid_fen
            .filter(|_| row.reviewed_us.is_some())
            .and_then(money),
        benefit_rating: rating_to_proto(row.benefit_rating) as i32,
        reviewer_id: row.reviewer_id.clone(),
        review_note: row.review_note.clone(),
        rejection_reason: rejection_to_proto(&row.rejection_reason) as i32,
        withdrawal_reason: row.withdrawal_reason.clone(),
        disbursement: disbursement(
            &row.payment_reference,
            &row.payment_date,
            row.disbursed_fen,
            &row.disbursed_by,
            row.disbursed_us,
        ),
        submit_time: Some(timestamp_from_us(row.submit_us)),
        update_time: Some(timestamp_from_us(row.updated_us)),
        review_time: row.reviewed_us.map(timestamp_from_us),
        revision: row.revision,
    }
}

/// The wire form of a proposal with its scores (in order of expert).
pub fn proposal_to_proto(row: &ProposalRow, scores: &[ScoreRow]) -> pb::Proposal {
    pb::Proposal {
        proposal_id: row.proposal_id.clone(),
        round_id: row.round_id.clone(),
        state: proposal_state_to_proto(row.state) as i32,
        applicant_uscc: row.applicant_uscc.clone(),
        category: category_to_proto(row.category) as i32,
        title: row.title.clone(),
        requested_amount: money(row.requested_fen),
        summary: row.summary.clone(),
        attachments: decode_attachments(&row.attachments),
        decision: decision_of(&row.decision),
        scores: scores
            .iter()
            .map(|score| pb::ProposalScore {
                expert_id: score.expert_id.clone(),
                expert_organization_uscc: score.expert_organization_uscc.clone(),
                score: score.score as u32,
                comment: score.comment.clone(),
                score_time: Some(timestamp_from_us(score.scored_us)),
            })
            .collect(),
        score_total: scores.iter().map(|s| s.score as u32).sum(),
        score_count: scores.len() as u32,
        rank: u32::try_from(row.rank).unwrap_or_default(),
        reservation_id: row.reservation_id.clone().unwrap_or_default(),
        awarded_amount: money(row.awarded_fen),
        disbursed_amount: money(row.disbursed_fen),
        disbursement: disbursement(
            &row.payment_reference,
            &row.payment_date,
            row.disbursed_fen,
            &row.disbursed_by,
            row.disbursed_us,
        ),
        withdrawal_reason: row.withdrawal_reason.clone(),
        submit_time: Some(timestamp_from_us(row.submit_us)),
        update_time: Some(timestamp_from_us(row.updated_us)),
        revision: row.revision,
    }
}

/// The wire form of a round as reported at `now_us`.
pub fn round_to_proto(row: &RoundRow, proposal_count: i64, now_us: i64) -> pb::SelectionRound {
    let state = match row.state.effective(row.deadline_us, now_us) {
        RoundState::Open => pb::SelectionRoundState::Open,
        RoundState::Closed | RoundState::Finalizing => pb::SelectionRoundState::Closed,
        RoundState::Finalized => pb::SelectionRoundState::Finalized,
    };
    let close_us = row.closed_us.or_else(|| {
        (row.state == RoundState::Open && now_us >= row.deadline_us).then_some(row.deadline_us)
    });
    pb::SelectionRound {
        round_id: row.round_id.clone(),
        pool_id: row.pool_id.clone(),
        title: row.title.clone(),
        state: state as i32,
        submission_deadline_time: Some(timestamp_from_us(row.deadline_us)),
        proposal_count,
        award_count: row.award_count,
        awarded_total: money(row.awarded_total_fen),
        ranking_decision_id: row.ranking_decision_id.clone(),
        created_by: row.created_by.clone(),
        create_time: Some(timestamp_from_us(row.created_us)),
        close_time: close_us.map(timestamp_from_us),
        finalize_time: row.finalized_us.map(timestamp_from_us),
    }
}

fn application_state(claim: bool, text: &str) -> Option<pb::ApplicationState> {
    use pb::application_state::State;
    let state = if claim {
        State::ClaimState(claim_state_to_proto(ClaimState::parse(text)?) as i32)
    } else {
        State::ProposalState(proposal_state_to_proto(ProposalState::parse(text)?) as i32)
    };
    Some(pb::ApplicationState { state: Some(state) })
}

fn history_to_proto(claim: bool, row: &HistoryRow) -> pb::HistoryEntry {
    pb::HistoryEntry {
        sequence: row.sequence,
        from_state: row
            .from_state
            .as_deref()
            .and_then(|s| application_state(claim, s)),
        to_state: application_state(claim, &row.to_state),
        actor: row.actor.clone(),
        reason: row.reason.clone(),
        create_time: Some(timestamp_from_us(row.created_us)),
        request_id: row.request_id.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------------------------

/// The gRPC face of the application service.
#[derive(Clone, Debug)]
pub struct ApplicationGrpc {
    workflow: Workflow,
}

impl ApplicationGrpc {
    /// Serves `workflow`.
    pub fn new(workflow: Workflow) -> Self {
        Self { workflow }
    }
}

fn parse_contract(
    v: &mut Violations,
    contract: Option<&pb::ComputeContract>,
) -> Option<(Uscc, Money, pb::ComputeContract)> {
    let Some(contract) = contract else {
        v.add("contract", "is required");
        return None;
    };
    let number = v.text(
        "contract.contract_number",
        &contract.contract_number,
        CONTRACT_NUMBER_LEN_MAX,
    );
    let seller = v.uscc("contract.seller_uscc", &contract.seller_uscc);
    v.text("contract.seller_name", &contract.seller_name, NAME_LEN_MAX);
    v.date("contract.signing_date", contract.signing_date.as_ref());
    let total = v.amount("contract.total", contract.total.as_ref());
    match pb::ComputeType::try_from(contract.compute_type) {
        Ok(pb::ComputeType::Unspecified) | Err(_) => {
            v.add("contract.compute_type", "must be one of the compute types")
        }
        Ok(_) => {}
    }
    if !is_division_code(&contract.data_center_division_code) {
        v.add(
            "contract.data_center_division_code",
            "must be a 6-digit administrative division code",
        );
    }
    v.text(
        "contract.data_center_name",
        &contract.data_center_name,
        NAME_LEN_MAX,
    );
    match &contract.related_party {
        None => v.add("contract.related_party", "the declaration is required"),
        Some(declaration) if declaration.related => {
            v.text(
                "contract.related_party.relationship_description",
                &declaration.relationship_description,
                RELATIONSHIP_LEN_MAX,
            );
        }
        Some(declaration) => {
            v.optional_text(
                "contract.related_party.relationship_description",
                &declaration.relationship_description,
                RELATIONSHIP_LEN_MAX,
            );
        }
    }
    v.text(
        "contract.scenario_description",
        &contract.scenario_description,
        DESCRIPTION_LEN_MAX,
    );
    v.attachments("contract.attachments", &contract.attachments);
    let (number, seller, total) = (number?, seller?, total?);
    let mut normalized = contract.clone();
    normalized.contract_number = number;
    normalized.seller_uscc = seller.as_str().to_owned();
    Some((seller, total, normalized))
}

fn parse_disbursement(
    v: &mut Violations,
    id_field: &str,
    id: &str,
    reference: &str,
    date: Option<&ProtoDate>,
    amount: Option<&ProtoMoney>,
) -> Option<Disbursement> {
    let id = v.id(id_field, id);
    let reference = v.text("payment_reference", reference, IDENTIFIER_LEN_MAX);
    let date = v.date("payment_date", date);
    let amount = v.amount("amount", amount);
    Some(Disbursement {
        id: id?,
        payment_reference: reference?,
        payment_date: date?,
        amount: amount?,
    })
}

#[tonic::async_trait]
impl pb::application_service_server::ApplicationService for ApplicationGrpc {
    async fn register_enterprise(
        &self,
        request: Request<pb::RegisterEnterpriseRequest>,
    ) -> Result<Response<pb::RegisterEnterpriseResponse>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        let mut v = Violations::default();
        let request_id = v.request_id(&req.request_id);
        let uscc = v.uscc("uscc", &req.uscc);
        let name = v.text("name", &req.name, NAME_LEN_MAX);
        let email = v.text("contact_email", &req.contact_email, EMAIL_LEN_MAX);
        if email.as_deref().is_some_and(|e| !is_email(e)) {
            v.add("contact_email", "must be an e-mail address");
        }
        let phone = v.optional_text("contact_phone", &req.contact_phone, PHONE_LEN_MAX);
        if !req.contact_phone.is_empty() && !is_phone(&req.contact_phone) {
            v.add(
                "contact_phone",
                "must be digits, +, -, spaces and parentheses",
            );
        }
        if !req.registration_division_code.is_empty()
            && !is_division_code(&req.registration_division_code)
        {
            v.add(
                "registration_division_code",
                "must be a 6-digit administrative division code",
            );
        }
        v.finish()?;
        let (Some(request_id), Some(uscc), Some(name), Some(email), Some(phone)) =
            (request_id, uscc, name, email, phone)
        else {
            unreachable!("finish() returned the violations of missing fields");
        };
        let division = if req.registration_division_code.is_empty() {
            uscc.division_code().to_owned()
        } else {
            req.registration_division_code.clone()
        };
        let caller = caller(request_id, op::REGISTER_ENTERPRISE, &req, actor);
        let response = self
            .workflow
            .register_enterprise(
                RegisterEnterprise {
                    uscc,
                    name,
                    contact_email: email,
                    contact_phone: phone,
                    registration_division_code: division,
                },
                &caller,
            )
            .await?;
        Ok(Response::new(response))
    }

    async fn get_enterprise(
        &self,
        request: Request<pb::GetEnterpriseRequest>,
    ) -> Result<Response<pb::GetEnterpriseResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        let uscc = v.uscc("uscc", &req.uscc);
        v.finish()?;
        let uscc = uscc.expect("validated");
        let store = self.workflow.store();
        let mut conn = store.read().await.map_err(ApplicationError::from)?;
        let row = store
            .get_enterprise(&mut conn, uscc.as_str())
            .await
            .map_err(ApplicationError::from)?
            .ok_or(ApplicationError::EnterpriseNotFound)?;
        Ok(Response::new(pb::GetEnterpriseResponse {
            enterprise: Some(enterprise_to_proto(&row)),
        }))
    }

    async fn list_enterprises(
        &self,
        request: Request<pb::ListEnterprisesRequest>,
    ) -> Result<Response<pb::ListEnterprisesResponse>, Status> {
        let req = request.into_inner();
        let prefix = &req.registration_division_code_prefix;
        if prefix.len() > 6 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(page_error(
                "registration_division_code_prefix",
                "must be 1 to 6 digits",
            ));
        }
        let size = page_size(
            req.page_size,
            ENTERPRISES_PAGE_DEFAULT,
            ENTERPRISES_PAGE_MAX,
        )
        .map_err(|e| page_error("page_size", e))?;
        let after = decode_token("enterprises", &req.page_token)
            .map_err(|e| page_error("page_token", e))?
            .unwrap_or_default();
        let mut rows = self
            .workflow
            .store()
            .list_enterprises(prefix, &after, i64::from(size) + 1)
            .await
            .map_err(ApplicationError::from)?;
        let next_page_token = next_token(&mut rows, size, |r| encode_token("enterprises", &r.uscc));
        Ok(Response::new(pb::ListEnterprisesResponse {
            enterprises: rows.iter().map(enterprise_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn update_enterprise_contact(
        &self,
        request: Request<pb::UpdateEnterpriseContactRequest>,
    ) -> Result<Response<pb::UpdateEnterpriseContactResponse>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        let mut v = Violations::default();
        let request_id = v.request_id(&req.request_id);
        let uscc = v.uscc("uscc", &req.uscc);
        let email = v.text("contact_email", &req.contact_email, EMAIL_LEN_MAX);
        if email.as_deref().is_some_and(|e| !is_email(e)) {
            v.add("contact_email", "must be an e-mail address");
        }
        let phone = v.optional_text("contact_phone", &req.contact_phone, PHONE_LEN_MAX);
        if !req.contact_phone.is_empty() && !is_phone(&req.contact_phone) {
            v.add(
                "contact_phone",
                "must be digits, +, -, spaces and parentheses",
            );
        }
        v.finish()?;
        let (Some(request_id), Some(uscc), Some(email), Some(phone)) =
            (request_id, uscc, email, phone)
        else {
            unreachable!("finish() returned the violations of missing fields");
        };
        let caller = caller(request_id, op::UPDATE_CONTACT, &req, actor);
        let response = self
            .workflow
            .update_enterprise_contact(&uscc, &email, &phone, &caller)
            .await?;
        Ok(Response::new(response))
    }

    async fn submit_claim(
        &self,
        request: Request<pb::SubmitClaimRequest>,
    ) -> Result<Response<pb::SubmitClaimResponse>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        let mut v = Violations::default();
        let request_id = v.request_id(&req.request_id);
        let enterprise = v.uscc("enterprise_uscc", &req.enterprise_uscc);
        let contract = parse_contract(&mut v, req.contract.as_ref());
        v.finish()?;
        let (Some(request_id), Some(enterprise), Some((seller, total, contract))) =
            (request_id, enterprise, contract)
        else {
            unreachable!("finish() returned the violations of missing fields");
        };
        let caller = caller(request_id, op::SUBMIT_CLAIM, &req, actor);
        let response = self
            .workflow
            .submit_claim(
                SubmitClaim {
                    enterprise,
                    seller,
                    total,
                    contract,
                },
                &caller,
            )
            .await?;
        Ok(Response::new(response))
    }

    async fn withdraw_claim(
        &self,
        request: Request<pb::WithdrawClaimRequest>,
    ) -> Result<Response<pb::WithdrawClaimResponse>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        let mut v = Violations::default();
        let request_id = v.request_id(&req.request_id);
        let claim_id = v.id("claim_id", &req.claim_id);
        let reason = v.text("reason", &req.reason, REASON_LEN_MAX);
        v.finish()?;
        let (Some(request_id), Some(claim_id), Some(reason)) = (request_id, claim_id, reason)
        else {
            unreachable!("finish() returned the violations of missing fields");
        };
        let caller = caller(request_id, op::WITHDRAW_CLAIM, &req, actor);
        let response = self
            .workflow
            .withdraw_claim(&claim_id, reason, &caller)
            .await?;
        Ok(Response::new(response))
    }

    async fn approve_claim(
        &self,
        request: Request<pb::ApproveClaimRequest>,
    ) -> Result<Response<pb::ApproveClaimResponse>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        let mut v = Violations::default();
        let request_id = v.request_id(&req.request_id);
        let claim_id = v.id("claim_id", &req.claim_id);
        let verified = v.amount("verified_paid_amount", req.verified_paid_amount.as_ref());
        let rating = match pb::BenefitRating::try_from(req.benefit_rating) {
            Ok(pb::BenefitRating::Unspecified) => Some(BenefitRating::Unspecified),
            Ok(pb::BenefitRating::High) => Some(BenefitRating::High),
            Ok(pb::BenefitRating::Medium) => Some(BenefitRating::Medium),
            Ok(pb::BenefitRating::Low) => Some(BenefitRating::Low),
            Err(_) => {
                v.add("benefit_rating", "unknown rating");
                None
            }
        };
        let reviewer = v.text("reviewer_id", &req.reviewer_id, IDENTIFIER_LEN_MAX);
        let note = v.optional_text("note", &req.note, NOTE_LEN_MAX);
        v.finish()?;
        let (
            Some(request_id),
            Some(claim_id),
            Some(verified),
            Some(rating),
            Some(reviewer),
            Some(note),
        ) = (request_id, claim_id, verified, rating, reviewer, note)
        else {
            unreachable!("finish() returned the violations of missing fields");
        };
        let caller = caller(request_id, op::APPROVE_CLAIM, &req, actor);
        let response = self
            .workflow
            .approve_claim(
                ApproveClaim {
                    claim_id,
                    verified,
                    rating,
                    reviewer_id: reviewer,
                    note,
                },
                &caller,
            )
            .await?;
        Ok(Response::new(response))
    }

    async fn reject_claim(
        &self,
        request: Request<pb::RejectClaimRequest>,
    ) -> Result<Response<pb::RejectClaimResponse>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        let mut v = Violations::default();
        let request_id = v.request_id(&req.request_id);
        let claim_id = v.id("claim_id", &req.claim_id);
        let reason = match pb::ClaimRejectionReason::try_from(req.reason) {
            Ok(pb::ClaimRejectionReason::Unspecified) | Err(_) => {
                v.add("reason", "must be one of the rejection reasons");
                None
            }
            Ok(reason) => RejectionReason::parse(
                reason
                    .as_str_name()
                    .trim_start_matches("CLAIM_REJECTION_REASON_"),
            ),
        };
        let note = if reason == Some(RejectionReason::Other) {
            v.text("note", &req.note, NOTE_LEN_MAX)
        } else {
            v.optional_text("note", &req.note, NOTE_LEN_MAX)
        };
        let reviewer = v.text("reviewer_id", &req.reviewer_id, IDENTIFIER_LEN_MAX);
        v.finish()?;
        let (Some(request_id), Some(claim_id), Some(reason), Some(note), Some(reviewer)) =
            (request_id, claim_id, reason, note, reviewer)
        else {
            unreachable!("finish() returned the violations of missing fields");
        };
        let caller = caller(request_id, op::REJECT_CLAIM, &req, actor);
        let response = self
            .workflow
            .reject_claim(
                RejectClaim {
                    claim_id,
                    reason,
                    note,
                    reviewer_id: reviewer,
                },
                &caller,
            )
            .await?;
        Ok(Response::new(response))
    }

    async fn record_claim_disbursement(
        &self,
        request: Request<pb::RecordClaimDisbursementRequest>,
    ) -> Result<Response<pb::RecordClaimDisbursementResponse>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        let mut v = Violations::default();
        let request_id = v.request_id(&req.request_id);
        let cmd = parse_disbursement(
            &mut v,
            "claim_id",
            &req.claim_id,
            &req.payment_reference,
            req.payment_date.as_ref(),
            req.amount.as_ref(),
        );
        v.finish()?;
        let (Some(request_id), Some(cmd)) = (request_id, cmd) else {
            unreachable!("finish() returned the violations of missing fields");
        };
        let caller = caller(request_id, op::DISBURSE_CLAIM, &req, actor);
        Ok(Response::new(
            self.workflow.disburse_claim(cmd, &caller).await?,
        ))
    }

    async fn get_claim(
        &self,
        request: Request<pb::GetClaimRequest>,
    ) -> Result<Response<pb::GetClaimResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        let claim_id = v.id("claim_id", &req.claim_id);
        v.finish()?;
        let store = self.workflow.store();
        let mut conn = store.read().await.map_err(ApplicationError::from)?;
        let claim = store
            .get_claim(&mut conn, &claim_id.expect("validated"))
            .await
            .map_err(ApplicationError::from)?
            .ok_or(ApplicationError::ClaimNotFound)?;
        let position = store
            .waitlist_position(&mut conn, &claim)
            .await
            .map_err(ApplicationError::from)?;
        Ok(Response::new(pb::GetClaimResponse {
            claim: Some(claim_to_proto(&claim, position)),
        }))
    }

    async fn list_claims(
        &self,
        request: Request<pb::ListClaimsRequest>,
    ) -> Result<Response<pb::ListClaimsResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        let state = claim_state_from_proto(req.state)
            .map_err(|()| v.add("state", "unknown state"))
            .ok()
            .flatten();
        let enterprise = if req.enterprise_uscc.is_empty() {
            String::new()
        } else {
            v.uscc("enterprise_uscc", &req.enterprise_uscc)
                .map(|u| u.as_str().to_owned())
                .unwrap_or_default()
        };
        let start = v.timestamp_us("submit_start_time", req.submit_start_time.as_ref());
        let end = v.timestamp_us("submit_end_time", req.submit_end_time.as_ref());
        let size = page_size(req.page_size, CLAIMS_PAGE_DEFAULT, CLAIMS_PAGE_MAX)
            .map_err(|e| v.add("page_size", e.to_string()))
            .ok();
        v.finish()?;
        let size = size.expect("validated");
        let after = keyset("claims", &req.page_token)?;
        let filter = ClaimFilter {
            state,
            enterprise_uscc: enterprise,
            submit_start_us: start,
            submit_end_us: end,
        };
        let store = self.workflow.store();
        let mut rows = store
            .list_claims(&filter, after, i64::from(size) + 1)
            .await
            .map_err(ApplicationError::from)?;
        let next_page_token = next_token(&mut rows, size, |c| {
            encode_token("claims", &format!("{}/{}", c.submit_us, c.claim_id))
        });
        let mut conn = store.read().await.map_err(ApplicationError::from)?;
        let mut claims = Vec::with_capacity(rows.len());
        for row in &rows {
            let position = store
                .waitlist_position(&mut conn, row)
                .await
                .map_err(ApplicationError::from)?;
            claims.push(claim_to_proto(row, position));
        }
        Ok(Response::new(pb::ListClaimsResponse {
            claims,
            next_page_token,
        }))
    }

    async fn create_selection_round(
        &self,
        request: Request<pb::CreateSelectionRoundRequest>,
    ) -> Result<Response<pb::CreateSelectionRoundResponse>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        let mut v = Violations::default();
        let request_id = v.request_id(&req.request_id);
        let pool_valid = (3..=63).contains(&req.pool_id.len())
            && req.pool_id.starts_with(|c: char| c.is_ascii_lowercase())
            && req
                .pool_id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !pool_valid {
            v.add(
                "pool_id",
                "must be 3 to 63 characters of a-z, 0-9 and -, starting with a letter",
            );
        }
        let title = v.text("title", &req.title, NAME_LEN_MAX);
        let deadline = v.timestamp_us(
            "submission_deadline_time",
            req.submission_deadline_time.as_ref(),
        );
        if req.submission_deadline_time.is_none() {
            v.add("submission_deadline_time", "is required");
        }
        v.finish()?;
        let (Some(request_id), Some(title), Some(deadline_us)) = (request_id, title, deadline)
        else {
            unreachable!("finish() returned the violations of missing fields");
        };
        let caller = caller(request_id, op::CREATE_ROUND, &req, actor);
        let response = self
            .workflow
            .create_round(
                CreateRound {
                    pool_id: req.pool_id.clone(),
                    title,
                    deadline_us,
                },
                &caller,
            )
            .await?;
        Ok(Response::new(response))
    }

    async fn get_selection_round(
        &self,
        request: Request<pb::GetSelectionRoundRequest>,
    ) -> Result<Response<pb::GetSelectionRoundResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        let round_id = v.id("round_id", &req.round_id);
        v.finish()?;
        let store = self.workflow.store();
        let mut conn = store.read().await.map_err(ApplicationError::from)?;
        let round = store
            .get_round(&mut conn, &round_id.expect("validated"))
            .await
            .map_err(ApplicationError::from)?
            .ok_or(ApplicationError::RoundNotFound)?;
        let count = store
            .proposal_count(&mut conn, &round.round_id)
            .await
            .map_err(ApplicationError::from)?;
        let now = store
            .now_us(&mut conn)
            .await
            .map_err(ApplicationError::from)?;
        Ok(Response::new(pb::GetSelectionRoundResponse {
            round: Some(round_to_proto(&round, count, now)),
        }))
    }

    async fn list_selection_rounds(
        &self,
        request: Request<pb::ListSelectionRoundsRequest>,
    ) -> Result<Response<pb::ListSelectionRoundsResponse>, Status> {
        let req = request.into_inner();
        let state = match pb::SelectionRoundState::try_from(req.state) {
            Ok(pb::SelectionRoundState::Unspecified) => None,
            Ok(pb::SelectionRoundState::Open) => Some(RoundState::Open),
            Ok(pb::SelectionRoundState::Closed) => Some(RoundState::Closed),
            Ok(pb::SelectionRoundState::Finalized) => Some(RoundState::Finalized),
            Err(_) => return Err(page_error("state", "unknown state")),
        };
        let size = page_size(req.page_size, ROUNDS_PAGE_DEFAULT, ROUNDS_PAGE_MAX)
            .map_err(|e| page_error("page_size", e))?;
        let after = keyset("rounds", &req.page_token)?;
        let store = self.workflow.store();
        let mut rows = store
            .list_rounds(&req.pool_id, state, after, i64::from(size) + 1)
            .await
            .map_err(ApplicationError::from)?;
        let next_page_token = next_token(&mut rows, size, |r| {
            encode_token("rounds", &format!("{}/{}", r.created_us, r.round_id))
        });
        let mut conn = store.read().await.map_err(ApplicationError::from)?;
        let now = store
            .now_us(&mut conn)
            .await
            .map_err(ApplicationError::from)?;
        let mut rounds = Vec::with_capacity(rows.len());
        for row in &rows {
            let count = store
                .proposal_count(&mut conn, &row.round_id)
                .await
                .map_err(ApplicationError::from)?;
            rounds.push(round_to_proto(row, count, now));
        }
        Ok(Response::new(pb::ListSelectionRoundsResponse {
            rounds,
            next_page_token,
        }))
    }

    async fn close_selection_round(
        &self,
        request: Request<pb::CloseSelectionRoundRequest>,
    ) -> Result<Response<pb::CloseSelectionRoundResponse>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        let mut v = Violations::default();
        let request_id = v.request_id(&req.request_id);
        let round_id = v.id("round_id", &req.round_id);
        v.finish()?;
        let (Some(request_id), Some(round_id)) = (request_id, round_id) else {
            unreachable!("finish() returned the violations of missing fields");
        };
        let caller = caller(request_id, op::CLOSE_ROUND, &req, actor);
        Ok(Response::new(
            self.workflow.close_round(&round_id, &caller).await?,
        ))
    }

    async fn submit_proposal(
        &self,
        request: Request<pb::SubmitProposalRequest>,
    ) -> Result<Response<pb::SubmitProposalResponse>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        let mut v = Violations::default();
        let request_id = v.request_id(&req.request_id);
        let round_id = v.id("round_id", &req.round_id);
        let applicant = v.uscc("applicant_uscc", &req.applicant_uscc);
        let category = match pb::ProposalCategory::try_from(req.category) {
            Ok(pb::ProposalCategory::Unspecified) | Err(_) => {
                v.add("category", "must be one of the categories");
                None
            }
            Ok(category) => ProposalCategory::parse(
                category
                    .as_str_name()
                    .trim_start_matches("PROPOSAL_CATEGORY_"),
            ),
        };
        let title = v.text("title", &req.title, NAME_LEN_MAX);
        let requested = v.amount("requested_amount", req.requested_amount.as_ref());
        let summary = v.text("summary", &req.summary, DESCRIPTION_LEN_MAX);
        v.attachments("attachments", &req.attachments);
        v.finish()?;
        let (
            Some(request_id),
            Some(round_id),
            Some(applicant),
            Some(category),
            Some(title),
            Some(requested),
            Some(summary),
        ) = (
            request_id, round_id, applicant, category, title, requested, summary,
        )
        else {
            unreachable!("finish() returned the violations of missing fields");
        };
        let caller = caller(request_id, op::SUBMIT_PROPOSAL, &req, actor);
        let response = self
            .workflow
            .submit_proposal(
                SubmitProposal {
                    round_id,
                    applicant,
                    category,
                    title,
                    requested,
                    summary,
                    attachments: req.attachments.clone(),
                },
                &caller,
            )
            .await?;
        Ok(Response::new(response))
    }

    async fn withdraw_proposal(
        &self,
        request: Request<pb::WithdrawProposalRequest>,
    ) -> Result<Response<pb::WithdrawProposalResponse>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        let mut v = Violations::default();
        let request_id = v.request_id(&req.request_id);
        let proposal_id = v.id("proposal_id", &req.proposal_id);
        let reason = v.text("reason", &req.reason, REASON_LEN_MAX);
        v.finish()?;
        let (Some(request_id), Some(proposal_id), Some(reason)) = (request_id, proposal_id, reason)
        else {
            unreachable!("finish() returned the violations of missing fields");
        };
        let caller = caller(request_id, op::WITHDRAW_PROPOSAL, &req, actor);
        Ok(Response::new(
            self.workflow
                .withdraw_proposal(&proposal_id, reason, &caller)
                .await?,
        ))
    }

    async fn score_proposal(
        &self,
        request: Request<pb::ScoreProposalRequest>,
    ) -> Result<Response<pb::ScoreProposalResponse>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        let mut v = Violations::default();
        let request_id = v.request_id(&req.request_id);
        let proposal_id = v.id("proposal_id", &req.proposal_id);
        let expert_id = v.text("expert_id", &req.expert_id, IDENTIFIER_LEN_MAX);
        let organization = v.uscc("expert_organization_uscc", &req.expert_organization_uscc);
        if req.score > SCORE_MAX {
            v.add("score", format!("must be 0 to {SCORE_MAX}"));
        }
        let comment = v.optional_text("comment", &req.comment, NOTE_LEN_MAX);
        v.finish()?;
        let (
            Some(request_id),
            Some(proposal_id),
            Some(expert_id),
            Some(organization),
            Some(comment),
        ) = (request_id, proposal_id, expert_id, organization, comment)
        else {
            unreachable!("finish() returned the violations of missing fields");
        };
        let caller = caller(request_id, op::SCORE_PROPOSAL, &req, actor);
        Ok(Response::new(
            self.workflow
                .score_proposal(
                    ScoreProposal {
                        proposal_id,
                        expert_id,
                        expert_organization: organization,
                        score: req.score,
                        comment,
                    },
                    &caller,
                )
                .await?,
        ))
    }

    async fn finalize_selection_round(
        &self,
        request: Request<pb::FinalizeSelectionRoundRequest>,
    ) -> Result<Response<pb::FinalizeSelectionRoundResponse>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        let mut v = Violations::default();
        let request_id = v.request_id(&req.request_id);
        let round_id = v.id("round_id", &req.round_id);
        v.finish()?;
        let (Some(request_id), Some(round_id)) = (request_id, round_id) else {
            unreachable!("finish() returned the violations of missing fields");
        };
        let caller = caller(request_id, op::FINALIZE_ROUND, &req, actor);
        Ok(Response::new(
            self.workflow.finalize_round(&round_id, &caller).await?,
        ))
    }

    async fn record_proposal_disbursement(
        &self,
        request: Request<pb::RecordProposalDisbursementRequest>,
    ) -> Result<Response<pb::RecordProposalDisbursementResponse>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        let mut v = Violations::default();
        let request_id = v.request_id(&req.request_id);
        let cmd = parse_disbursement(
            &mut v,
            "proposal_id",
            &req.proposal_id,
            &req.payment_reference,
            req.payment_date.as_ref(),
            req.amount.as_ref(),
        );
        v.finish()?;
        let (Some(request_id), Some(cmd)) = (request_id, cmd) else {
            unreachable!("finish() returned the violations of missing fields");
        };
        let caller = caller(request_id, op::DISBURSE_PROPOSAL, &req, actor);
        Ok(Response::new(
            self.workflow.disburse_proposal(cmd, &caller).await?,
        ))
    }

    async fn get_proposal(
        &self,
        request: Request<pb::GetProposalRequest>,
    ) -> Result<Response<pb::GetProposalResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        let proposal_id = v.id("proposal_id", &req.proposal_id);
        v.finish()?;
        let store = self.workflow.store();
        let mut conn = store.read().await.map_err(ApplicationError::from)?;
        let proposal = store
            .get_proposal(&mut conn, &proposal_id.expect("validated"))
            .await
            .map_err(ApplicationError::from)?
            .ok_or(ApplicationError::ProposalNotFound)?;
        let scores = store
            .scores(&mut conn, &proposal.proposal_id)
            .await
            .map_err(ApplicationError::from)?;
        Ok(Response::new(pb::GetProposalResponse {
            proposal: Some(proposal_to_proto(&proposal, &scores)),
        }))
    }

    async fn list_proposals(
        &self,
        request: Request<pb::ListProposalsRequest>,
    ) -> Result<Response<pb::ListProposalsResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::default();
        let state = proposal_state_from_proto(req.state)
            .map_err(|()| v.add("state", "unknown state"))
            .ok()
            .flatten();
        let applicant = if req.applicant_uscc.is_empty() {
            String::new()
        } else {
            v.uscc("applicant_uscc", &req.applicant_uscc)
                .map(|u| u.as_str().to_owned())
                .unwrap_or_default()
        };
        let size = page_size(req.page_size, PROPOSALS_PAGE_DEFAULT, PROPOSALS_PAGE_MAX)
            .map_err(|e| v.add("page_size", e.to_string()))
            .ok();
        v.finish()?;
        let size = size.expect("validated");
        let after = keyset("proposals", &req.page_token)?;
        let filter = ProposalFilter {
            round_id: req.round_id.clone(),
            state,
            applicant_uscc: applicant,
        };
        let store = self.workflow.store();
        let mut rows = store
            .list_proposals(&filter, after, i64::from(size) + 1)
            .await
            .map_err(ApplicationError::from)?;
        let next_page_token = next_token(&mut rows, size, |p| {
            encode_token("proposals", &format!("{}/{}", p.submit_us, p.proposal_id))
        });
        let mut conn = store.read().await.map_err(ApplicationError::from)?;
        let mut proposals = Vec::with_capacity(rows.len());
        for row in &rows {
            let scores = store
                .scores(&mut conn, &row.proposal_id)
                .await
                .map_err(ApplicationError::from)?;
            proposals.push(proposal_to_proto(row, &scores));
        }
        Ok(Response::new(pb::ListProposalsResponse {
            proposals,
            next_page_token,
        }))
    }

    async fn list_application_history(
        &self,
        request: Request<pb::ListApplicationHistoryRequest>,
    ) -> Result<Response<pb::ListApplicationHistoryResponse>, Status> {
        let req = request.into_inner();
        let id = req.application_id.as_str();
        let claim = id.starts_with(CLAIM_PREFIX);
        if !(claim || id.starts_with(PROPOSAL_PREFIX)) || id.len() > IDENTIFIER_LEN_MAX {
            return Err(page_error(
                "application_id",
                "must be a claim (claim-…) or proposal (proposal-…) identifier",
            ));
        }
        let size = page_size(req.page_size, HISTORY_PAGE_DEFAULT, HISTORY_PAGE_MAX)
            .map_err(|e| page_error("page_size", e))?;
        let after = match decode_token("history", &req.page_token)
            .map_err(|e| page_error("page_token", e))?
        {
            None => 0,
            Some(key) => key
                .parse::<i64>()
                .map_err(|_| page_error("page_token", "page_token is not valid"))?,
        };
        let store = self.workflow.store();
        {
            let mut conn = store.read().await.map_err(ApplicationError::from)?;
            let exists = if claim {
                store
                    .get_claim(&mut conn, id)
                    .await
                    .map_err(ApplicationError::from)?
                    .is_some()
            } else {
                store
                    .get_proposal(&mut conn, id)
                    .await
                    .map_err(ApplicationError::from)?
                    .is_some()
            };
            if !exists {
                return Err(if claim {
                    ApplicationError::ClaimNotFound
                } else {
                    ApplicationError::ProposalNotFound
                }
                .into());
            }
        }
        let mut rows = store
            .history(id, after, i64::from(size) + 1)
            .await
            .map_err(ApplicationError::from)?;
        let next_page_token = next_token(&mut rows, size, |h| {
            encode_token("history", &h.sequence.to_string())
        });
        Ok(Response::new(pb::ListApplicationHistoryResponse {
            application_kind: if claim {
                pb::ApplicationKind::ComputeVoucherClaim
            } else {
                pb::ApplicationKind::DataInfrastructureProposal
            } as i32,
            entries: rows
                .iter()
                .map(|row| history_to_proto(claim, row))
                .collect(),
            next_page_token,
        }))
    }
}
