//! Application domain: the life cycles of claims, proposals and selection rounds as pure state
//! machines, the limits of every input, the funding decisions (waitlist or partial), and the
//! errors a caller can act on. No tonic, no sqlx.

use std::fmt;

use rust_decimal::Decimal;
use subsidy_common::Money;
use subsidy_common::db::DbError;
use subsidy_proto::status::FieldViolation;

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
    /// The hold expired before review; terminal.
    Expired,
    /// Paid; terminal.
    Disbursed,
}

impl ClaimState {
    /// Every state, in the order of the wire enum.
    pub const ALL: [ClaimState; 9] = [
        ClaimState::Submitted,
        ClaimState::Ineligible,
        ClaimState::Waitlisted,
        ClaimState::PendingReview,
        ClaimState::Approved,
        ClaimState::Rejected,
        ClaimState::Withdrawn,
        ClaimState::Expired,
        ClaimState::Disbursed,
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
            ClaimState::Submitted | ClaimState::Waitlisted | ClaimState::PendingReview
        )
    }

    /// Whether a reviewer may reject from this state.
    pub fn can_reject(self) -> bool {
        matches!(self, ClaimState::Waitlisted | ClaimState::PendingReview)
    }

    /// Whether a reviewer may approve from this state.
    pub fn can_approve(self) -> bool {
        self == ClaimState::PendingReview
    }

    /// Whether finance may record a payment from this state.
    pub fn can_disburse(self) -> bool {
        self == ClaimState::Approved
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
}

impl ProposalState {
    /// Every state, in the order of the wire enum.
    pub const ALL: [ProposalState; 7] = [
        ProposalState::Submitted,
        ProposalState::Ineligible,
        ProposalState::Eligible,
        ProposalState::Awarded,
        ProposalState::NotSelected,
        ProposalState::Withdrawn,
        ProposalState::Disbursed,
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

/// How a claim is served when the pool cannot cover its entitlement (POLICY.md `shortfall`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimShortfall {
    /// Wait in strict submission order until the full entitlement fits.
    Waitlist,
    /// The head of the line receives what is left.
    Partial,
}

/// What to do with a claim that is next in line for money.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FundingPlan {
    /// Hold this amount (the full entitlement, or less under partial funding).
    Reserve(Money),
    /// Wait on the waitlist.
    Wait,
}

/// Decides how to fund a claim that needs `entitlement` from a pool with `available` left.
/// `queue_ahead` says whether older claims are waiting: strict submission order means nobody
/// skips them, whatever money is left.
pub fn plan_funding(
    entitlement: Money,
    available: Money,
    shortfall: ClaimShortfall,
    queue_ahead: bool,
) -> FundingPlan {
    if queue_ahead {
        return FundingPlan::Wait;
    }
    if available >= entitlement {
        return FundingPlan::Reserve(entitlement);
    }
    match shortfall {
        ClaimShortfall::Partial if !available.is_zero() => FundingPlan::Reserve(available),
        _ => FundingPlan::Wait,
    }
}

/// The amount approved on review: the entitlement recomputed on the verified amount, never
/// more than what is held (which already respects the pool and the enterprise cap).
pub fn approved_amount(recomputed_entitlement: Money, reserved: Money) -> Money {
    recomputed_entitlement.min(reserved)
}

/// Converts a decimal rate string of the rules service (`0.05`) to basis points, rounding down;
/// `None` when it is not a rate between 0 and 1.
pub fn rate_basis_points(rate: &str) -> Option<u32> {
    if rate.is_empty() {
        return Some(0);
    }
    let value = Decimal::from_str_exact(rate.trim()).ok()?;
    if value < Decimal::ZERO || value > Decimal::ONE {
        return None;
    }
    let points = (value * Decimal::from(BASIS_POINTS_PER_UNIT)).trunc();
    u32::try_from(points.mantissa() / 10i128.pow(points.scale())).ok()
}

/// Whether `text` is a 6-digit administrative division code.
pub fn is_division_code(text: &str) -> bool {
    text.len() == 6 && text.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `text` looks like an e-mail address: one `@`, a non-empty local part, a domain with
/// a dot, no spaces or control characters. Deliverability is the mail relay's business.
pub fn is_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && text.chars().all(|c| c.is_ascii_graphic() || !c.is_ascii())
}

/// Whether `text` is a telephone number: digits, `+`, `-` and spaces.
pub fn is_phone(text: &str) -> bool {
    !text.trim().is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | ' ' | '(' | ')'))
}

/// Whether `text` is a lower-case hex SHA-256.
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `text` is a plain file name (no directories, no control characters).
pub fn is_file_name(text: &str) -> bool {
    !text.trim().is_empty()
        && text.chars().count() <= FILE_NAME_LEN_MAX
        && !text.contains(['/', '\\'])
        && text != "."
        && text != ".."
        && !text.chars().any(char::is_control)
}

/// What the application service refuses, and why. Classified into gRPC codes once, in
/// `grpc.rs`.
#[derive(Debug, thiserror::Error)]
pub enum ApplicationError {
    /// The request is malformed; nothing was written.
    #[error("invalid request")]
    Invalid(Vec<FieldViolation>),
    /// The verified amount is above the contract total.
    #[error("the verified amount exceeds the contract total")]
    ApprovedAmountExceedsContract,
    /// The pool named does not exist in the budget service.
    #[error("no such pool")]
    PoolNotFound,
    /// No such enterprise.
    #[error("enterprise not found")]
    EnterpriseNotFound,
    /// The enterprise is registered already.
    #[error("enterprise already registered")]
    EnterpriseAlreadyRegistered,
    /// No such claim.
    #[error("claim not found")]
    ClaimNotFound,
    /// The contract was claimed before by a claim that was not withdrawn.
    #[error("this contract was already claimed")]
    DuplicateContract,
    /// The transition is not allowed from the current state.
    #[error("the transition is not allowed from state {0}")]
    TransitionNotAllowed(String),
    /// The hold expired before the approval; the claim is now EXPIRED.
    #[error("the reservation expired before approval")]
    ReservationExpired,
    /// The rules service no longer finds the claim eligible.
    #[error("the claim is no longer eligible with the verified amount")]
    NotEligibleOnRecheck,
    /// No such round.
    #[error("selection round not found")]
    RoundNotFound,
    /// The round no longer accepts submissions.
    #[error("the selection round is closed")]
    RoundClosed,
    /// The round was finalised.
    #[error("the selection round is already finalised")]
    RoundAlreadyFinalized,
    /// No such proposal.
    #[error("proposal not found")]
    ProposalNotFound,
    /// The expert belongs to the applicant.
    #[error("an expert may not score a proposal of their own organisation")]
    ConflictOfInterest,
    /// The request id was used for a different request.
    #[error("request_id was used for a different request")]
    RequestIdReused,
    /// A peer service could not be reached; what was recorded stays recorded.
    #[error("the {0} service is unavailable")]
    UpstreamUnavailable(&'static str),
    /// A peer service answered something this service does not expect (a bug on one side).
    #[error("unexpected answer from the {service} service: {code} {reason}")]
    UpstreamUnexpected {
        /// The peer.
        service: &'static str,
        /// Its status code, by name.
        code: String,
        /// Its `ErrorInfo` reason.
        reason: String,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for ApplicationError {
    fn from(error: sqlx::Error) -> Self {
        ApplicationError::Db(DbError::from(error))
    }
}

impl ApplicationError {
    /// A single field violation.
    pub fn invalid(field: &str, description: impl Into<String>) -> Self {
        ApplicationError::Invalid(vec![FieldViolation::new(field, description)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yuan(n: i64) -> Money {
        Money::from_yuan(n).unwrap()
    }

    #[test]
    fn a_claim_behind_a_waiting_claim_waits_even_when_money_is_left() {
        // Proves strict submission order: nobody skips the waitlist.
        assert_eq!(
            plan_funding(yuan(10), yuan(1_000), ClaimShortfall::Waitlist, true),
            FundingPlan::Wait
        );
        assert_eq!(
            plan_funding(yuan(10), yuan(1_000), ClaimShortfall::Partial, true),
            FundingPlan::Wait
        );
    }

    #[test]
    fn the_head_is_funded_fully_or_waits_or_is_funded_partly_by_policy() {
        // Proves the shortfall switch of POLICY.md: waitlist by default, partial when chosen.
        assert_eq!(
            plan_funding(yuan(10), yuan(10), ClaimShortfall::Waitlist, false),
            FundingPlan::Reserve(yuan(10))
        );
        assert_eq!(
            plan_funding(yuan(10), yuan(9), ClaimShortfall::Waitlist, false),
            FundingPlan::Wait
        );
        assert_eq!(
            plan_funding(yuan(10), yuan(9), ClaimShortfall::Partial, false),
            FundingPlan::Reserve(yuan(9))
        );
        assert_eq!(
            plan_funding(yuan(10), Money::ZERO, ClaimShortfall::Partial, false),
            FundingPlan::Wait
        );
    }

    #[test]
    fn the_approved_amount_never_exceeds_the_hold() {
        // Proves approval never commits more than was reserved.
        assert_eq!(approved_amount(yuan(12), yuan(10)), yuan(10));
        assert_eq!(approved_amount(yuan(8), yuan(10)), yuan(8));
    }

    #[test]
    fn rates_become_basis_points_rounded_down() {
        // Proves the rate conversion is exact and never rounds up.
        assert_eq!(rate_basis_points("0.05"), Some(500));
        assert_eq!(rate_basis_points("0.035"), Some(350));
        assert_eq!(rate_basis_points("0.03339"), Some(333));
        assert_eq!(rate_basis_points(""), Some(0));
        assert_eq!(rate_basis_points("1.5"), None);
        assert_eq!(rate_basis_points("-0.1"), None);
        assert_eq!(rate_basis_points("abc"), None);
    }

    #[test]
    fn transitions_follow_the_life_cycle() {
        // Proves which states allow withdrawal, rejection, approval and payment.
        use ClaimState::*;
        let withdrawable: Vec<_> = ClaimState::ALL
            .into_iter()
            .filter(|s| s.can_withdraw())
            .collect();
        assert_eq!(withdrawable, [Submitted, Waitlisted, PendingReview]);
        let rejectable: Vec<_> = ClaimState::ALL
            .into_iter()
            .filter(|s| s.can_reject())
            .collect();
        assert_eq!(rejectable, [Waitlisted, PendingReview]);
        assert!(PendingReview.can_approve() && !Waitlisted.can_approve());
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
    fn contact_details_and_digests_are_checked() {
        // Proves the shape checks of e-mail, phone, division code, digest and file name.
        assert!(is_email("ops@example.cn"));
        for bad in ["", "a", "a@b", "@b.cn", "a@@b.cn", "a b@c.cn", "a@.cn"] {
            assert!(!is_email(bad), "{bad}");
        }
        assert!(is_phone("+86 531-1234 5678"));
        assert!(!is_phone("call me"));
        assert!(is_division_code("370102") && !is_division_code("37010"));
        assert!(is_sha256_hex(&"a".repeat(64)) && !is_sha256_hex(&"A".repeat(64)));
        assert!(is_file_name("contract.pdf"));
        for bad in ["", "a/b.pdf", "..", "a\\b"] {
            assert!(!is_file_name(bad), "{bad}");
        }
    }
}
