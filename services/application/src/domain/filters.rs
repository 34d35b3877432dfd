//! The filters of the claim and proposal listings: plain values the edge builds from a request
//! and storage turns into a query.

use super::{ClaimState, ProposalState};

/// Filters of a claim listing.
#[derive(Clone, Debug, Default)]
pub struct ClaimFilter {
    /// State, or none.
    pub state: Option<ClaimState>,
    /// Buyer, or empty.
    pub enterprise_uscc: String,
    /// Submitted at or after, µs.
    pub submit_start_us: Option<i64>,
    /// Submitted before, µs.
    pub submit_end_us: Option<i64>,
    /// Only these buyers (an applicant's own enterprises), or all.
    pub tenants: Option<Vec<String>>,
    /// Only claims in review whose review deadline passed: the wish (from the request) and
    /// the time it is judged at, µs (set by the workflow from the database clock).
    pub review_overdue: bool,
    /// The time `review_overdue` is judged at, µs.
    pub overdue_at_us: i64,
}

/// Filters of a proposal listing.
#[derive(Clone, Debug, Default)]
pub struct ProposalFilter {
    /// Round, or empty.
    pub round_id: String,
    /// State, or none.
    pub state: Option<ProposalState>,
    /// Applicant, or empty.
    pub applicant_uscc: String,
    /// Only these applicants (an applicant's own enterprises), or all.
    pub tenants: Option<Vec<String>>,
}
