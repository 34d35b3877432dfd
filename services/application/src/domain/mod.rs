//! Application domain, pure: the life cycles of claims, proposals and selection rounds as state
//! machines ([`state`]), the funding decisions and the next step of a claim ([`funding`]), and
//! the shape checks of every input ([`checks`]). No database, no wire, no clock: the time a
//! decision depends on is handed in.

pub mod checks;
pub mod documents;
pub mod filters;
pub mod funding;
pub mod invoices;
pub mod publicity;
pub mod state;
pub mod statistics;

pub use checks::{
    FieldProblem, deadline_violation, is_division_code, is_email, is_file_name, is_phone,
    is_pool_id, is_sha256_hex, payment_violations,
};
pub use filters::{ClaimFilter, ProposalFilter};
pub use funding::{
    ClaimShortfall, ClaimStep, FundingPlan, PendingSteps, approved_amount, hold_extension_due,
    next_step, plan_funding, rate_basis_points,
};
pub use state::{
    BenefitRating, ClaimState, ProposalCategory, ProposalState, RejectionReason, RoundRefusal,
    RoundState,
};

/// Longest enterprise, seller or round name and proposal title, in characters.
pub const NAME_LEN_MAX: usize = 200;
/// Longest e-mail address, in characters (RFC 5321 path limit).
pub const EMAIL_LEN_MAX: usize = 254;
/// Longest telephone number, in characters.
pub const PHONE_LEN_MAX: usize = 32;
/// Longest contract number, in characters.
pub const CONTRACT_NUMBER_LEN_MAX: usize = 64;
/// Longest related-party description, in characters.
pub const RELATIONSHIP_LEN_MAX: usize = 1_000;
/// Longest scenario description or proposal summary, in characters.
pub const DESCRIPTION_LEN_MAX: usize = 5_000;
/// Most documents in one answer to a request for information.
pub const INFORMATION_DOCUMENTS_MAX: usize = 20;
/// Most attachment digests per application.
pub const ATTACHMENTS_MAX: usize = 50;
/// Longest attachment file name, in characters.
pub const FILE_NAME_LEN_MAX: usize = 255;
/// Largest attachment, in bytes (1 GiB).
pub const ATTACHMENT_SIZE_BYTES_MAX: i64 = 1024 * 1024 * 1024;
/// Longest withdrawal or rejection note, in characters.
pub const REASON_LEN_MAX: usize = 500;
/// Longest reviewer note or expert comment, in characters.
pub const NOTE_LEN_MAX: usize = 2_000;
/// Longest reviewer, expert or payment identifier, in characters.
pub const IDENTIFIER_LEN_MAX: usize = 128;
/// Longest registration division code prefix of an enterprise listing, in digits.
pub const DIVISION_CODE_LEN: usize = 6;
/// Shortest pool identifier, in characters.
pub const POOL_ID_LEN_MIN: usize = 3;
/// Longest pool identifier, in characters.
pub const POOL_ID_LEN_MAX: usize = 63;
/// Highest expert score.
pub const SCORE_MAX: u32 = 100;
/// Most proposals one selection round accepts (the rules service ranks at most 1000).
pub const ROUND_PROPOSALS_MAX: i64 = 1_000;
/// Most scores one proposal can have (the rules service accepts at most 100 per candidate).
pub const PROPOSAL_SCORES_MAX: i64 = 100;
/// Longest time a submission deadline may lie ahead, in microseconds (one year).
pub const DEADLINE_AHEAD_US_MAX: i64 = 366 * 24 * 3600 * 1_000_000;
/// Basis points in one (a rate of 1 is 10,000 basis points).
pub const BASIS_POINTS_PER_UNIT: i64 = 10_000;

/// Who changes an application when the service acts on its own.
pub const SYSTEM_ACTOR: &str = "system";

/// The prefix of every claim identifier.
pub const CLAIM_ID_PREFIX: &str = "claim-";
/// The prefix of every proposal identifier.
pub const PROPOSAL_ID_PREFIX: &str = "proposal-";
/// The prefix of every selection round identifier.
pub const ROUND_ID_PREFIX: &str = "round-";

/// The two kinds of application, told apart by the prefix of their identifiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplicationKind {
    /// A compute-voucher claim (`claim-…`).
    Claim,
    /// A data-infrastructure proposal (`proposal-…`).
    Proposal,
}

impl ApplicationKind {
    /// The kind of an application identifier; `None` when it is neither kind's.
    pub fn of(application_id: &str) -> Option<Self> {
        if application_id.len() > IDENTIFIER_LEN_MAX {
            None
        } else if application_id.starts_with(CLAIM_ID_PREFIX) {
            Some(ApplicationKind::Claim)
        } else if application_id.starts_with(PROPOSAL_ID_PREFIX) {
            Some(ApplicationKind::Proposal)
        } else {
            None
        }
    }
}

/// Why the rules service was asked for a decision about an application; a claim or proposal
/// keeps the ids of the decisions that shaped it with this purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecisionPurpose {
    /// A claim's first evaluation, or a proposal's screening.
    Evaluation,
    /// A claim evaluated again before funding (its enterprise's usage changed).
    Reevaluation,
    /// A claim evaluated again on approval, with the verified amount and rating.
    ApprovalRecheck,
    /// The ranking of a proposal's round.
    Ranking,
}

impl DecisionPurpose {
    /// Every purpose.
    pub const ALL: [DecisionPurpose; 4] = [
        DecisionPurpose::Evaluation,
        DecisionPurpose::Reevaluation,
        DecisionPurpose::ApprovalRecheck,
        DecisionPurpose::Ranking,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionPurpose::Evaluation => "EVALUATION",
            DecisionPurpose::Reevaluation => "REEVALUATION",
            DecisionPurpose::ApprovalRecheck => "APPROVAL_RECHECK",
            DecisionPurpose::Ranking => "RANKING",
        }
    }

    /// The purpose of a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_purposes_read_back_as_stored() {
        // Proves every purpose's stored name parses to itself and nothing else parses.
        for purpose in DecisionPurpose::ALL {
            assert_eq!(DecisionPurpose::parse(purpose.as_str()), Some(purpose));
        }
        assert_eq!(DecisionPurpose::parse("evaluation"), None);
    }

    #[test]
    fn an_application_id_names_its_kind_by_prefix() {
        // Proves claims and proposals are told apart by their identifiers alone.
        assert_eq!(ApplicationKind::of("claim-1"), Some(ApplicationKind::Claim));
        assert_eq!(
            ApplicationKind::of("proposal-1"),
            Some(ApplicationKind::Proposal)
        );
        assert_eq!(ApplicationKind::of("round-1"), None);
        assert_eq!(
            ApplicationKind::of(&format!("claim-{}", "x".repeat(200))),
            None
        );
    }
}
