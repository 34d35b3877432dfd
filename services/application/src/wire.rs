//! Conversions between the stored rows and domain enums and the wire messages of
//! `subsidy.application.v1`. The edge renders what it reads through here, and the use cases
//! build the responses they store for replay through here, so neither needs the other.

use prost::Message;
use subsidy_common::edge::{date_text, money, timestamp};
use subsidy_proto::application as pb;

use crate::domain::{
    ApplicationKind, BenefitRating, ClaimState, DecisionPurpose, ProposalCategory, ProposalState,
    RejectionReason, RoundState,
};
use crate::storage::{
    ClaimRow, DecisionLinkRow, EnterpriseRow, HistoryRow, Payment, ProposalRow, RoundRow, ScoreRow,
};

// ---------------------------------------------------------------------------------------------
// Enums
// ---------------------------------------------------------------------------------------------

/// The wire form of a claim state.
pub fn claim_state_to_proto(state: ClaimState) -> pb::ClaimState {
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
        ClaimState::NeedsInformation => pb::ClaimState::NeedsInformation,
        ClaimState::Revoked => pb::ClaimState::Revoked,
    }
}

/// The claim state of a wire state; `None` for the unspecified one.
pub fn claim_state_from_proto(state: pb::ClaimState) -> Option<ClaimState> {
    ClaimState::ALL
        .into_iter()
        .find(|s| claim_state_to_proto(*s) == state)
}

/// The wire form of a proposal state.
pub fn proposal_state_to_proto(state: ProposalState) -> pb::ProposalState {
    match state {
        ProposalState::Submitted => pb::ProposalState::Submitted,
        ProposalState::Ineligible => pb::ProposalState::Ineligible,
        ProposalState::Eligible => pb::ProposalState::Eligible,
        ProposalState::Awarded => pb::ProposalState::Awarded,
        ProposalState::NotSelected => pb::ProposalState::NotSelected,
        ProposalState::Withdrawn => pb::ProposalState::Withdrawn,
        ProposalState::Disbursed => pb::ProposalState::Disbursed,
        ProposalState::Revoked => pb::ProposalState::Revoked,
    }
}

/// The proposal state of a wire state; `None` for the unspecified one.
pub fn proposal_state_from_proto(state: pb::ProposalState) -> Option<ProposalState> {
    ProposalState::ALL
        .into_iter()
        .find(|s| proposal_state_to_proto(*s) == state)
}

/// The round state a wire state filters on; `None` for the unspecified one.
pub fn round_state_from_proto(state: pb::SelectionRoundState) -> Option<RoundState> {
    match state {
        pb::SelectionRoundState::Unspecified => None,
        pb::SelectionRoundState::Open => Some(RoundState::Open),
        pb::SelectionRoundState::Closed => Some(RoundState::Closed),
        pb::SelectionRoundState::Finalized => Some(RoundState::Finalized),
    }
}

/// The wire form of a benefit rating.
pub fn rating_to_proto(rating: BenefitRating) -> pb::BenefitRating {
    match rating {
        BenefitRating::Unspecified => pb::BenefitRating::Unspecified,
        BenefitRating::High => pb::BenefitRating::High,
        BenefitRating::Medium => pb::BenefitRating::Medium,
        BenefitRating::Low => pb::BenefitRating::Low,
    }
}

/// The benefit rating of a wire rating.
pub fn rating_from_proto(rating: pb::BenefitRating) -> BenefitRating {
    match rating {
        pb::BenefitRating::Unspecified => BenefitRating::Unspecified,
        pb::BenefitRating::High => BenefitRating::High,
        pb::BenefitRating::Medium => BenefitRating::Medium,
        pb::BenefitRating::Low => BenefitRating::Low,
    }
}

/// The wire form of a rejection reason.
pub fn rejection_to_proto(reason: RejectionReason) -> pb::ClaimRejectionReason {
    match reason {
        RejectionReason::ContractNotVerified => pb::ClaimRejectionReason::ContractNotVerified,
        RejectionReason::PaymentNotVerified => pb::ClaimRejectionReason::PaymentNotVerified,
        RejectionReason::ComputeNotEligible => pb::ClaimRejectionReason::ComputeNotEligible,
        RejectionReason::RelatedPartyTransaction => {
            pb::ClaimRejectionReason::RelatedPartyTransaction
        }
        RejectionReason::InsufficientBenefit => pb::ClaimRejectionReason::InsufficientBenefit,
        RejectionReason::FalseDeclaration => pb::ClaimRejectionReason::FalseDeclaration,
        RejectionReason::Other => pb::ClaimRejectionReason::Other,
    }
}

/// The rejection reason of a wire reason; `None` for the unspecified one.
pub fn rejection_from_proto(reason: pb::ClaimRejectionReason) -> Option<RejectionReason> {
    RejectionReason::ALL
        .into_iter()
        .find(|r| rejection_to_proto(*r) == reason)
}

/// The wire form of a proposal category.
pub fn category_to_proto(category: ProposalCategory) -> pb::ProposalCategory {
    match category {
        ProposalCategory::TrustedDataSpace => pb::ProposalCategory::TrustedDataSpace,
        ProposalCategory::DataField => pb::ProposalCategory::DataField,
        ProposalCategory::DataAnnotationBase => pb::ProposalCategory::DataAnnotationBase,
        ProposalCategory::OtherDataInfrastructure => pb::ProposalCategory::OtherDataInfrastructure,
    }
}

/// The proposal category of a wire category; `None` for the unspecified one.
pub fn category_from_proto(category: pb::ProposalCategory) -> Option<ProposalCategory> {
    ProposalCategory::ALL
        .into_iter()
        .find(|c| category_to_proto(*c) == category)
}

// ---------------------------------------------------------------------------------------------
// Stored wire messages
// ---------------------------------------------------------------------------------------------

/// The stored decision of a claim or proposal.
pub fn decision_of(bytes: &Option<Vec<u8>>) -> Option<pb::DecisionSummary> {
    bytes.as_ref().map(|bytes| {
        pb::DecisionSummary::decode(bytes.as_slice())
            .expect("a stored decision is a valid DecisionSummary")
    })
}

/// The policy version of a stored decision (empty when there is none yet).
pub fn policy_version_of(bytes: &Option<Vec<u8>>) -> String {
    decision_of(bytes)
        .map(|decision| decision.policy_version)
        .unwrap_or_default()
}

/// The claim's stored contract.
pub fn contract_of(claim: &ClaimRow) -> pb::ComputeContract {
    pb::ComputeContract::decode(claim.contract.as_slice())
        .expect("a stored contract is a valid ComputeContract")
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

// ---------------------------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------------------------

/// The wire form of an enterprise.
pub fn enterprise_to_proto(row: &EnterpriseRow) -> pb::Enterprise {
    pb::Enterprise {
        uscc: row.uscc.clone(),
        name: row.name.clone(),
        contact_email: row.contact_email.clone(),
        contact_phone: row.contact_phone.clone(),
        registration_division_code: row.registration_division_code.clone(),
        create_time: Some(timestamp(row.created_us)),
        update_time: Some(timestamp(row.updated_us)),
    }
}

/// The wire form of a recorded payment.
fn disbursement_to_proto(payment: &Option<Payment>) -> Option<pb::Disbursement> {
    payment.as_ref().map(|payment| pb::Disbursement {
        payment_reference: payment.reference.clone(),
        payment_date: date_text(&payment.date),
        amount: money(payment.fen),
        recorded_by: payment.by.clone(),
        record_time: Some(timestamp(payment.recorded_us)),
    })
}

/// The amount paid, zero before the payment.
fn disbursed_amount(payment: &Option<Payment>) -> Option<subsidy_proto::google::r#type::Money> {
    money(payment.as_ref().map_or(0, |payment| payment.fen))
}

/// The wire form of a claim; `waitlist_position` is 0 unless WAITLISTED.
pub fn claim_to_proto(row: &ClaimRow, waitlist_position: i64) -> pb::Claim {
    pb::Claim {
        claim_id: row.claim_id.clone(),
        state: claim_state_to_proto(row.state) as i32,
        enterprise_uscc: row.enterprise_uscc.clone(),
        contract: Some(contract_of(row)),
        decision: decision_of(&row.decision),
        pool_id: row.pool_id.clone(),
        reservation_id: row.reservation_id.clone().unwrap_or_default(),
        reserved_amount: money(row.reserved_fen),
        approved_amount: money(row.approved_fen),
        disbursed_amount: disbursed_amount(&row.payment),
        waitlist_position,
        verified_paid_amount: row
            .verified_paid_fen
            .filter(|_| row.reviewed_us.is_some())
            .and_then(money),
        benefit_rating: rating_to_proto(row.benefit_rating) as i32,
        reviewer_id: row.reviewer_id.clone(),
        review_note: row.review_note.clone(),
        rejection_reason: RejectionReason::parse(&row.rejection_reason)
            .map_or(pb::ClaimRejectionReason::Unspecified, rejection_to_proto)
            as i32,
        withdrawal_reason: row.withdrawal_reason.clone(),
        disbursement: disbursement_to_proto(&row.payment),
        submit_time: Some(timestamp(row.submit_us)),
        update_time: Some(timestamp(row.updated_us)),
        review_time: row.reviewed_us.map(timestamp),
        revision: row.revision,
        // Read from their own table: see `decision_links_to_proto`.
        decisions: Vec::new(),
        // Read from their own table by GetClaim and GetProposal only.
        attachment_documents: Vec::new(),
        // Read from its own table by `claim_response` and `proposal_response` only.
        public_notice: None,
        review_due_time: row.review_due_us.map(timestamp),
        hold_expire_time: row
            .hold_expires_us
            .filter(|_| row.reservation_id.is_some())
            .map(timestamp),
        information_request: row.information_request.clone(),
        // Read from their own table: see `workflow::set_invoices`.
        invoices: Vec::new(),
        invoiced_amount: money(0),
        verified_invoiced_amount: money(0),
    }
}

/// The wire form of an application's links to the rules service's decisions, oldest first.
pub fn decision_links_to_proto(links: &[DecisionLinkRow]) -> Vec<pb::DecisionLink> {
    links
        .iter()
        .map(|link| pb::DecisionLink {
            decision_id: link.decision_id.clone(),
            purpose: match link.purpose {
                DecisionPurpose::Evaluation => pb::DecisionPurpose::Evaluation,
                DecisionPurpose::Reevaluation => pb::DecisionPurpose::Reevaluation,
                DecisionPurpose::ApprovalRecheck => pb::DecisionPurpose::ApprovalRecheck,
                DecisionPurpose::Ranking => pb::DecisionPurpose::Ranking,
            } as i32,
            link_time: Some(timestamp(link.linked_us)),
        })
        .collect()
}

/// The sum of a proposal's scores.
pub fn score_total(scores: &[ScoreRow]) -> u32 {
    scores.iter().map(|s| s.score as u32).sum()
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
                score_time: Some(timestamp(score.scored_us)),
            })
            .collect(),
        score_total: score_total(scores),
        score_count: scores.len() as u32,
        rank: u32::try_from(row.rank).unwrap_or_default(),
        reservation_id: row.reservation_id.clone().unwrap_or_default(),
        awarded_amount: money(row.awarded_fen),
        disbursed_amount: disbursed_amount(&row.payment),
        disbursement: disbursement_to_proto(&row.payment),
        withdrawal_reason: row.withdrawal_reason.clone(),
        submit_time: Some(timestamp(row.submit_us)),
        update_time: Some(timestamp(row.updated_us)),
        revision: row.revision,
        // Read from their own table: see `decision_links_to_proto`.
        decisions: Vec::new(),
        // Read from their own table by GetClaim and GetProposal only.
        attachment_documents: Vec::new(),
        // Read from its own table by `claim_response` and `proposal_response` only.
        public_notice: None,
    }
}

/// The award of an AWARDED (or since DISBURSED) proposal in a finalisation's response.
pub fn award_to_proto(proposal: &ProposalRow, scores: &[ScoreRow]) -> pb::Award {
    pb::Award {
        proposal_id: proposal.proposal_id.clone(),
        applicant_uscc: proposal.applicant_uscc.clone(),
        rank: u32::try_from(proposal.rank).unwrap_or_default(),
        score_total: score_total(scores),
        score_count: scores.len() as u32,
        requested_amount: money(proposal.requested_fen),
        awarded_amount: money(proposal.awarded_fen),
        partially_funded: proposal.awarded_fen < proposal.requested_fen,
        reservation_id: proposal.reservation_id.clone().unwrap_or_default(),
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
        submission_deadline_time: Some(timestamp(row.deadline_us)),
        proposal_count,
        award_count: row.award_count,
        awarded_total: money(row.awarded_total_fen),
        ranking_decision_id: row.ranking_decision_id.clone(),
        created_by: row.created_by.clone(),
        create_time: Some(timestamp(row.created_us)),
        close_time: close_us.map(timestamp),
        finalize_time: row.finalized_us.map(timestamp),
    }
}

/// The wire kind of an application.
pub fn application_kind_to_proto(kind: ApplicationKind) -> pb::ApplicationKind {
    match kind {
        ApplicationKind::Claim => pb::ApplicationKind::ComputeVoucherClaim,
        ApplicationKind::Proposal => pb::ApplicationKind::DataInfrastructureProposal,
    }
}

fn application_state(kind: ApplicationKind, text: &str) -> Option<pb::ApplicationState> {
    use pb::application_state::State;
    let state = match kind {
        ApplicationKind::Claim => {
            State::ClaimState(claim_state_to_proto(ClaimState::parse(text)?) as i32)
        }
        ApplicationKind::Proposal => {
            State::ProposalState(proposal_state_to_proto(ProposalState::parse(text)?) as i32)
        }
    };
    Some(pb::ApplicationState { state: Some(state) })
}

/// The wire form of a history entry of an application of `kind`.
pub fn history_to_proto(kind: ApplicationKind, row: &HistoryRow) -> pb::HistoryEntry {
    pb::HistoryEntry {
        sequence: row.sequence,
        from_state: row
            .from_state
            .as_deref()
            .and_then(|s| application_state(kind, s)),
        to_state: application_state(kind, &row.to_state),
        actor: row.actor.clone(),
        reason: row.reason.clone(),
        create_time: Some(timestamp(row.created_us)),
        request_id: row.request_id.clone(),
    }
}

/// A document as the wire shows it.
pub fn document_to_proto(
    row: &crate::storage::DocumentRow,
    attachment_declared: bool,
) -> pb::Document {
    use crate::domain::documents::DocumentKind;
    let kind = match row.kind {
        DocumentKind::Contract => pb::DocumentKind::Contract,
        DocumentKind::Invoice => pb::DocumentKind::Invoice,
        DocumentKind::PaymentProof => pb::DocumentKind::PaymentProof,
        DocumentKind::Proposal => pb::DocumentKind::Proposal,
        DocumentKind::Other => pb::DocumentKind::Other,
    };
    pb::Document {
        document_id: row.document_id.clone(),
        application_id: row.application_id.clone(),
        kind: kind as i32,
        file_name: row.file_name.clone(),
        media_type: row.media_type.clone(),
        size_bytes: row.size_bytes,
        sha256_hex: row.sha256_hex.clone(),
        attachment_declared,
        uploaded_by: row.uploaded_by.clone(),
        upload_time: Some(timestamp(row.uploaded_us)),
    }
}

/// An invoice of a claim as the wire shows it.
pub fn invoice_to_proto(row: &crate::storage::InvoiceRow) -> pb::Invoice {
    use crate::domain::invoices::InvoiceVerification;
    let state = match row.verification {
        InvoiceVerification::Unverified => pb::InvoiceVerificationState::Unverified,
        InvoiceVerification::Verified => pb::InvoiceVerificationState::Verified,
        InvoiceVerification::Rejected => pb::InvoiceVerificationState::Rejected,
    };
    pb::Invoice {
        invoice_code: row.invoice_code.clone(),
        invoice_number: row.invoice_number.clone(),
        issue_date: date_text(&row.issue_date),
        amount: money(row.amount_fen),
        seller_uscc: row.seller_uscc.clone(),
        buyer_uscc: row.buyer_uscc.clone(),
        verification: Some(pb::InvoiceVerification {
            state: state as i32,
            reviewer_id: row.reviewer_id.clone(),
            verify_time: row.verified_us.map(timestamp),
            note: row.review_note.clone(),
        }),
    }
}

/// A public notice as the wire shows it at `now_us`.
pub fn notice_to_proto(row: &crate::storage::NoticeRow, now_us: i64) -> pb::PublicNotice {
    use crate::storage::NoticeKind;
    let kind = match row.kind {
        NoticeKind::Claim => pb::ApplicationKind::ComputeVoucherClaim,
        NoticeKind::Proposal => pb::ApplicationKind::DataInfrastructureProposal,
    };
    let state = if row.revoked_us.is_some() {
        pb::PublicNoticeState::Revoked
    } else if row.end_us.is_some_and(|end| now_us >= end) {
        pb::PublicNoticeState::Ended
    } else {
        pb::PublicNoticeState::Published
    };
    pb::PublicNotice {
        notice_id: row.notice_id.clone(),
        application_kind: kind as i32,
        application_id: row.application_id.clone(),
        enterprise_name: row.enterprise_name.clone(),
        enterprise_uscc: row.enterprise_uscc.clone(),
        project_title: row.project_title.clone(),
        round_id: row.round_id.clone(),
        amount: money(row.amount_fen),
        start_time: Some(timestamp(row.start_us)),
        end_time: row.end_us.map(timestamp),
        working_days: u32::try_from(row.working_days).unwrap_or(u32::MAX),
        calendar_covered: row.calendar_covered,
        state: state as i32,
        open_objection_count: u32::try_from(row.open_objections).unwrap_or(u32::MAX),
        revoke_time: row.revoked_us.map(timestamp),
    }
}

/// An objection as the wire shows it.
pub fn objection_to_proto(row: &crate::storage::ObjectionRow) -> pb::Objection {
    use crate::domain::publicity::ObjectionState;
    let state = match row.state {
        ObjectionState::Open => pb::ObjectionState::Open,
        ObjectionState::Upheld => pb::ObjectionState::Upheld,
        ObjectionState::Dismissed => pb::ObjectionState::Dismissed,
    };
    pb::Objection {
        objection_id: row.objection_id.clone(),
        notice_id: row.notice_id.clone(),
        application_id: row
            .notice_id
            .strip_prefix("notice-")
            .unwrap_or_default()
            .to_owned(),
        grounds: row.grounds.clone(),
        state: state as i32,
        filed_by: row.filed_by.clone(),
        file_time: Some(timestamp(row.filed_us)),
        reviewer_id: row.reviewer_id.clone(),
        decision_reason: row.decision_reason.clone(),
        decide_time: row.decided_us.map(timestamp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_enum_survives_the_round_trip_through_the_wire() {
        // Proves the to/from pairs are inverse, so a filter reads what a response writes.
        for state in ClaimState::ALL {
            assert_eq!(
                claim_state_from_proto(claim_state_to_proto(state)),
                Some(state)
            );
        }
        for state in ProposalState::ALL {
            assert_eq!(
                proposal_state_from_proto(proposal_state_to_proto(state)),
                Some(state)
            );
        }
        for reason in RejectionReason::ALL {
            assert_eq!(
                rejection_from_proto(rejection_to_proto(reason)),
                Some(reason)
            );
        }
        for category in ProposalCategory::ALL {
            assert_eq!(
                category_from_proto(category_to_proto(category)),
                Some(category)
            );
        }
        for rating in [
            BenefitRating::Unspecified,
            BenefitRating::High,
            BenefitRating::Medium,
            BenefitRating::Low,
        ] {
            assert_eq!(rating_from_proto(rating_to_proto(rating)), rating);
        }
    }
}
