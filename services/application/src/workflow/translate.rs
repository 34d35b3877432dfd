//! The translation between the application's rows and the request and answer types of the rules
//! and budget services: the facts of a claim or proposal as the rules service reads them, its
//! decision as the application reports it, the ranking request of a round and the check of the
//! answer, and the expiry of a hold.

use prost::Message;
use subsidy_common::Money;
use subsidy_common::edge::timestamp;
use subsidy_proto::application as pb;
use subsidy_proto::budget as bpb;
use subsidy_proto::rules as rpb;

use crate::domain::{BenefitRating, ProposalCategory, rate_basis_points};
use crate::error::ApplicationError;
use crate::storage::{ClaimRow, EnterpriseRow, ProposalRow, ScoreRow};
use crate::upstream::{PeerError, money};
use crate::wire::contract_of;

/// Hex digits of the ranking digest kept in a round's ranking identifier.
const RANKING_ID_HEX_LEN: usize = 32;

fn fen(amount: i64) -> Money {
    Money::from_fen(amount).expect("stored amounts are valid money")
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

/// The facts of a claim as the rules service evaluates them: its contract with `total` (the
/// contract total, or the verified amount on review), `rating`, and the enterprise's `usage`
/// of the pool by other claims.
pub fn voucher_facts(
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

/// The facts of a proposal as the rules service screens them.
pub fn data_infra_facts(
    proposal: &ProposalRow,
    applicant: &EnterpriseRow,
) -> rpb::DataInfraProposal {
    rpb::DataInfraProposal {
        proposal_id: proposal.proposal_id.clone(),
        applicant_uscc: proposal.applicant_uscc.clone(),
        region_code: applicant.registration_division_code.clone(),
        category: rules_category(proposal.category),
        requested_amount: Some(fen(proposal.requested_fen).to_proto()),
    }
}

/// The rules service's decision, summarised for the application's wire form.
pub fn decision_summary(decision: &rpb::Decision) -> Result<pb::DecisionSummary, PeerError> {
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

/// The codes of the checks a decision failed, comma-separated.
pub fn failed_codes(decision: &pb::DecisionSummary) -> String {
    decision
        .failed_reasons
        .iter()
        .map(|reason| reason.code.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The history reason of a decision: eligible, or not with the `codes` that failed.
pub fn decision_reason(summary: &pb::DecisionSummary, not_eligible_codes: Option<&str>) -> String {
    let policy = format!(
        "under policy {} {} (decision {})",
        summary.policy_id, summary.policy_version, summary.decision_id
    );
    match not_eligible_codes {
        None => format!("eligible {policy}"),
        Some(codes) => format!("not eligible {policy}: {codes}"),
    }
}

/// When a reservation's hold expires, µs (by the budget's clock).
pub fn hold_expires_us(reservation: &bpb::Reservation) -> Option<i64> {
    reservation
        .expire_time
        .map(|t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1_000)
}

/// The ranking request of a round's scored proposals against what the pool has `available`.
pub fn rank_request(
    available: Money,
    candidates: &[(ProposalRow, Vec<ScoreRow>)],
) -> rpb::RankSelectionRoundRequest {
    rpb::RankSelectionRoundRequest {
        pool_available: Some(available.to_proto()),
        candidates: candidates
            .iter()
            .map(|(proposal, scores)| rpb::SelectionCandidate {
                proposal_id: proposal.proposal_id.clone(),
                requested_amount: Some(fen(proposal.requested_fen).to_proto()),
                expert_scores: scores.iter().map(|s| s.score as u32).collect(),
                mean_score: String::new(),
                submit_time: Some(timestamp(proposal.submit_us)),
            })
            .collect(),
        policy_version: String::new(),
    }
}

/// Checks what the rules service ranked against what it was asked: every award is a
/// candidate's, within its request, and together within the pool.
pub fn check_ranking(
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

/// The identifier of a ranking: the rules service's decision id, under which it stored the
/// ranking; empty when nothing was ranked. (A rules service that stores no decisions answers
/// none: the ranking is then named by a digest of the answer.)
pub fn ranking_decision_id(ranking: &rpb::RankSelectionRoundResponse) -> String {
    if ranking.awards.is_empty() {
        return String::new();
    }
    if !ranking.decision_id.is_empty() {
        return ranking.decision_id.clone();
    }
    use sha2::Digest;
    format!(
        "ranking-{}",
        &hex::encode(sha2::Sha256::digest(ranking.encode_to_vec()))[..RANKING_ID_HEX_LEN]
    )
}

/// A stored ranking.
pub fn decode_ranking(bytes: &[u8]) -> rpb::RankSelectionRoundResponse {
    rpb::RankSelectionRoundResponse::decode(bytes).expect("a stored ranking decodes")
}
