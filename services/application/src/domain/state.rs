//! The life cycles as pure state machines: claim, proposal and selection-round states with the
//! transitions each allows, and the enums an application carries (rating, rejection reason,
//! category). Every enum has one stored name, parsed back exactly.

use std::fmt;

/// The life-cycle state of a compute-voucher claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClaimState {
    /// Recorded; evaluation or reservation still in progress.
    Submitted,
    /// Not eligible; terminal.
    Ineligible,
    /// Eligible, waiting in submission order for money.
    Waitlisted,
    /// Money held; awaiting review.
    PendingReview,
    /// Approved; the approved amount is committed.
    Approved,
    /// Rejected by a reviewer; terminal.
    Rejected,
    /// Withdrawn by the applicant; terminal.
    Withdrawn,
    /// The hold expired before review; a reviewer may reopen it.
    Expired,
    /// Paid; terminal.
    Disbursed,
    /// Money held; a reviewer asked the applicant for more information.
    NeedsInformation,
    /// An objection to the award was upheld during its publicity period; the committed money
    /// returns to the pool; terminal.
    Revoked,
}

impl ClaimState {
    /// Every state, in the order of the wire enum.
    pub const ALL: [ClaimState; 11] = [
        ClaimState::Submitted,
        ClaimState::Ineligible,
        ClaimState::Waitlisted,
        ClaimState::PendingReview,
        ClaimState::Approved,
        ClaimState::Rejected,
        ClaimState::Withdrawn,
        ClaimState::Expired,
        ClaimState::Disbursed,
        ClaimState::NeedsInformation,
        ClaimState::Revoked,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimState::Submitted => "SUBMITTED",
            ClaimState::Ineligible => "INELIGIBLE",
            ClaimState::Waitlisted => "WAITLISTED",
            ClaimState::PendingReview => "PENDING_REVIEW",
            ClaimState::Approved => "APPROVED",
            ClaimState::Rejected => "REJECTED",
            ClaimState::Withdrawn => "WITHDRAWN",
            ClaimState::Expired => "EXPIRED",
            ClaimState::Disbursed => "DISBURSED",
            ClaimState::NeedsInformation => "NEEDS_INFORMATION",
            ClaimState::Revoked => "REVOKED",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether the applicant may withdraw from this state (before approval).
    pub fn can_withdraw(self) -> bool {
        matches!(
            self,
            ClaimState::Submitted
                | ClaimState::Waitlisted
                | ClaimState::PendingReview
                | ClaimState::NeedsInformation
        )
    }

    /// Whether a reviewer may reject from this state.
    pub fn can_reject(self) -> bool {
        matches!(
            self,
            ClaimState::Waitlisted | ClaimState::PendingReview | ClaimState::NeedsInformation
        )
    }

    /// Whether a reviewer may approve from this state.
    pub fn can_approve(self) -> bool {
        self == ClaimState::PendingReview
    }

    /// Whether finance may record a payment from this state.
    pub fn can_disburse(self) -> bool {
        self == ClaimState::Approved
    }

    /// Whether the claim is in review with its money held (PENDING_REVIEW or
    /// NEEDS_INFORMATION): its hold is kept alive and its review deadline runs.
    pub fn in_review(self) -> bool {
        matches!(
            self,
            ClaimState::PendingReview | ClaimState::NeedsInformation
        )
    }

    /// Whether the claim still wants money from the pool (evaluation, reservation or waitlist).
    pub fn awaits_funding(self) -> bool {
        matches!(self, ClaimState::Submitted | ClaimState::Waitlisted)
    }
}

impl fmt::Display for ClaimState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The life-cycle state of a data-infrastructure proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProposalState {
    /// Recorded; screening still in progress.
    Submitted,
    /// Not eligible; terminal.
    Ineligible,
    /// Eligible; awaiting scores and finalisation.
    Eligible,
    /// Awarded on finalisation.
    Awarded,
    /// Not awarded on finalisation; terminal.
    NotSelected,
    /// Withdrawn before finalisation; terminal.
    Withdrawn,
    /// Paid; terminal.
    Disbursed,
    /// An objection to the award was upheld during its publicity period; the committed money
    /// returns to the pool; terminal.
    Revoked,
}

impl ProposalState {
    /// Every state, in the order of the wire enum.
    pub const ALL: [ProposalState; 8] = [
        ProposalState::Submitted,
        ProposalState::Ineligible,
        ProposalState::Eligible,
        ProposalState::Awarded,
        ProposalState::NotSelected,
        ProposalState::Withdrawn,
        ProposalState::Disbursed,
        ProposalState::Revoked,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ProposalState::Submitted => "SUBMITTED",
            ProposalState::Ineligible => "INELIGIBLE",
            ProposalState::Eligible => "ELIGIBLE",
            ProposalState::Awarded => "AWARDED",
            ProposalState::NotSelected => "NOT_SELECTED",
            ProposalState::Withdrawn => "WITHDRAWN",
            ProposalState::Disbursed => "DISBURSED",
            ProposalState::Revoked => "REVOKED",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether the applicant may withdraw from this state.
    pub fn can_withdraw(self) -> bool {
        matches!(self, ProposalState::Submitted | ProposalState::Eligible)
    }
}

impl fmt::Display for ProposalState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The stored state of a selection round. `Finalizing` is internal: the round is reported
/// CLOSED until its finalisation is complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RoundState {
    /// Accepting proposals until the deadline.
    Open,
    /// Closed for submissions.
    Closed,
    /// A finalisation has started and is being completed.
    Finalizing,
    /// Awards made; terminal.
    Finalized,
}

impl RoundState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RoundState::Open => "OPEN",
            RoundState::Closed => "CLOSED",
            RoundState::Finalizing => "FINALIZING",
            RoundState::Finalized => "FINALIZED",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        [
            RoundState::Open,
            RoundState::Closed,
            RoundState::Finalizing,
            RoundState::Finalized,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    /// The state as reported at `now_us`: an OPEN round past its deadline is CLOSED, and a
    /// round being finalised is CLOSED until it is FINALIZED.
    pub fn effective(self, deadline_us: i64, now_us: i64) -> RoundState {
        match self {
            RoundState::Open if now_us >= deadline_us => RoundState::Closed,
            RoundState::Finalizing => RoundState::Closed,
            other => other,
        }
    }
}

/// The benefit rating of a claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum BenefitRating {
    /// Not rated.
    #[default]
    Unspecified,
    /// High.
    High,
    /// Medium.
    Medium,
    /// Low.
    Low,
}

impl BenefitRating {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            BenefitRating::Unspecified => "UNSPECIFIED",
            BenefitRating::High => "HIGH",
            BenefitRating::Medium => "MEDIUM",
            BenefitRating::Low => "LOW",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Unspecified, Self::High, Self::Medium, Self::Low]
            .into_iter()
            .find(|r| r.as_str() == text)
    }
}

/// Why a reviewer rejected a claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectionReason {
    /// The contract could not be verified.
    ContractNotVerified,
    /// The invoices or payments could not be verified.
    PaymentNotVerified,
    /// The compute is not eligible compute.
    ComputeNotEligible,
    /// A related-party transaction not at arm's length.
    RelatedPartyTransaction,
    /// No significant benefit.
    InsufficientBenefit,
    /// A false declaration.
    FalseDeclaration,
    /// Another reason, explained in the note.
    Other,
}

impl RejectionReason {
    /// Every reason.
    pub const ALL: [RejectionReason; 7] = [
        Self::ContractNotVerified,
        Self::PaymentNotVerified,
        Self::ComputeNotEligible,
        Self::RelatedPartyTransaction,
        Self::InsufficientBenefit,
        Self::FalseDeclaration,
        Self::Other,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ContractNotVerified => "CONTRACT_NOT_VERIFIED",
            Self::PaymentNotVerified => "PAYMENT_NOT_VERIFIED",
            Self::ComputeNotEligible => "COMPUTE_NOT_ELIGIBLE",
            Self::RelatedPartyTransaction => "RELATED_PARTY_TRANSACTION",
            Self::InsufficientBenefit => "INSUFFICIENT_BENEFIT",
            Self::FalseDeclaration => "FALSE_DECLARATION",
            Self::Other => "OTHER",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

/// The category of a data-infrastructure proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProposalCategory {
    /// A trusted data space.
    TrustedDataSpace,
    /// A data field.
    DataField,
    /// A data annotation base.
    DataAnnotationBase,
    /// Other data infrastructure.
    OtherDataInfrastructure,
}

impl ProposalCategory {
    /// Every category.
    pub const ALL: [ProposalCategory; 4] = [
        Self::TrustedDataSpace,
        Self::DataField,
        Self::DataAnnotationBase,
        Self::OtherDataInfrastructure,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TrustedDataSpace => "TRUSTED_DATA_SPACE",
            Self::DataField => "DATA_FIELD",
            Self::DataAnnotationBase => "DATA_ANNOTATION_BASE",
            Self::OtherDataInfrastructure => "OTHER_DATA_INFRASTRUCTURE",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

impl ClaimState {
    /// Whether a claim may end as `to` (REJECTED by a reviewer or WITHDRAWN by the applicant)
    /// from this state.
    pub fn can_end_as(self, to: ClaimState) -> bool {
        match to {
            ClaimState::Rejected => self.can_reject(),
            ClaimState::Withdrawn => self.can_withdraw(),
            _ => false,
        }
    }
}

/// Why a selection round refuses a change of its proposals or of itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoundRefusal {
    /// The round no longer accepts submissions (closed, past its deadline, or finalising).
    Closed,
    /// The round was finalised.
    AlreadyFinalized,
}

impl RoundState {
    /// Whether a round in this state with `deadline_us` still accepts submissions (and may be
    /// closed early) at `now_us`.
    pub fn admission(self, deadline_us: i64, now_us: i64) -> Result<(), RoundRefusal> {
        match self.effective(deadline_us, now_us) {
            RoundState::Open => Ok(()),
            RoundState::Closed | RoundState::Finalizing => Err(RoundRefusal::Closed),
            RoundState::Finalized => Err(RoundRefusal::AlreadyFinalized),
        }
    }

    /// Whether the proposals of a round in this state are frozen (finalisation began).
    pub fn proposals_frozen(self) -> bool {
        matches!(self, RoundState::Finalizing | RoundState::Finalized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_follow_the_life_cycle() {
        // Proves which states allow withdrawal, rejection, approval and payment.
        use ClaimState::*;
        let withdrawable: Vec<_> = ClaimState::ALL
            .into_iter()
            .filter(|s| s.can_withdraw())
            .collect();
        assert_eq!(
            withdrawable,
            [Submitted, Waitlisted, PendingReview, NeedsInformation]
        );
        let rejectable: Vec<_> = ClaimState::ALL
            .into_iter()
            .filter(|s| s.can_reject())
            .collect();
        assert_eq!(rejectable, [Waitlisted, PendingReview, NeedsInformation]);
        assert!(PendingReview.can_approve() && !Waitlisted.can_approve());
        assert!(!NeedsInformation.can_approve());
        let in_review: Vec<_> = ClaimState::ALL
            .into_iter()
            .filter(|s| s.in_review())
            .collect();
        assert_eq!(in_review, [PendingReview, NeedsInformation]);
        assert!(Approved.can_disburse() && !PendingReview.can_disburse());
        for state in ClaimState::ALL {
            assert_eq!(ClaimState::parse(state.as_str()), Some(state));
        }
        for state in ProposalState::ALL {
            assert_eq!(ProposalState::parse(state.as_str()), Some(state));
        }
    }

    #[test]
    fn an_open_round_past_its_deadline_is_reported_closed() {
        // Proves a round closes by itself when its deadline passes.
        assert_eq!(RoundState::Open.effective(100, 99), RoundState::Open);
        assert_eq!(RoundState::Open.effective(100, 100), RoundState::Closed);
        assert_eq!(RoundState::Finalizing.effective(100, 0), RoundState::Closed);
        assert_eq!(
            RoundState::Finalized.effective(100, 200),
            RoundState::Finalized
        );
    }

    #[test]
    fn a_round_admits_submissions_only_while_it_is_open() {
        // Proves which reported states refuse a submission, and with which refusal.
        assert_eq!(RoundState::Open.admission(100, 99), Ok(()));
        assert_eq!(
            RoundState::Open.admission(100, 100),
            Err(RoundRefusal::Closed)
        );
        assert_eq!(
            RoundState::Finalizing.admission(100, 0),
            Err(RoundRefusal::Closed)
        );
        assert_eq!(
            RoundState::Finalized.admission(100, 0),
            Err(RoundRefusal::AlreadyFinalized)
        );
        assert!(
            RoundState::Finalizing.proposals_frozen() && !RoundState::Closed.proposals_frozen()
        );
        assert!(ClaimState::Waitlisted.can_end_as(ClaimState::Rejected));
        assert!(!ClaimState::Submitted.can_end_as(ClaimState::Rejected));
        assert!(ClaimState::Submitted.can_end_as(ClaimState::Withdrawn));
        assert!(!ClaimState::PendingReview.can_end_as(ClaimState::Approved));
    }
}
