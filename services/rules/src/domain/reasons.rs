//! The stable reason codes of failed checks, with their explanations in Simplified Chinese and
//! English. Codes never change meaning; new ones are only added.

use std::fmt;

/// Why a claim or proposal is not eligible.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A USCC fails the GB 32100-2015 format or check character.
    UsccInvalid,
    /// Buyer and seller are the same enterprise.
    BuyerIsSeller,
    /// Buyer and seller are declared related.
    RelatedParty,
    /// The contract buys general-purpose hosting or storage, not AI compute.
    ComputeNotAi,
    /// The data center's division code is not `37…`.
    DataCenterOutsideShandong,
    /// The signing day is outside the policy's window.
    SignedOutsideWindow,
    /// The amount is not positive, or above the policy's maximum.
    AmountOutOfRange,
    /// The buyer is on the dishonesty denylist.
    BuyerOnDenylist,
    /// Nothing of the enterprise cap remains.
    EnterpriseCapReached,
    /// The seller was not an admitted provider on the signing date (registry check).
    SellerNotAdmittedProvider,
    /// The data center is not one of the seller's in-service Shandong data centers.
    DataCenterNotRegistered,
    /// The applicant's registration division is not `37…`.
    ApplicantOutsideShandong,
    /// The project's category is not allowed by the policy.
    CategoryNotAllowed,
    /// The request exceeds the per-project cap.
    RequestAboveProjectCap,
}

impl Reason {
    /// The stable code.
    pub fn code(self) -> &'static str {
        match self {
            Reason::UsccInvalid => "USCC_INVALID",
            Reason::BuyerIsSeller => "BUYER_IS_SELLER",
            Reason::RelatedParty => "RELATED_PARTY",
            Reason::ComputeNotAi => "COMPUTE_NOT_AI",
            Reason::DataCenterOutsideShandong => "DATA_CENTER_OUTSIDE_SHANDONG",
            Reason::SignedOutsideWindow => "SIGNED_OUTSIDE_WINDOW",
            Reason::AmountOutOfRange => "AMOUNT_OUT_OF_RANGE",
            Reason::BuyerOnDenylist => "BUYER_ON_DENYLIST",
            Reason::EnterpriseCapReached => "ENTERPRISE_CAP_REACHED",
            Reason::SellerNotAdmittedProvider => "SELLER_NOT_ADMITTED_PROVIDER",
            Reason::DataCenterNotRegistered => "DATA_CENTER_NOT_REGISTERED",
            Reason::ApplicantOutsideShandong => "APPLICANT_OUTSIDE_SHANDONG",
            Reason::CategoryNotAllowed => "CATEGORY_NOT_ALLOWED",
            Reason::RequestAboveProjectCap => "REQUEST_ABOVE_PROJECT_CAP",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// One failed check: its reason, the request field it concerns and the explanations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedCheck {
    /// The stable reason.
    pub reason: Reason,
    /// The request field, for example `claim.buyer_uscc`; empty when several fields.
    pub field: &'static str,
    /// The explanation in Simplified Chinese.
    pub message_zh: String,
    /// The explanation in English.
    pub message_en: String,
}

impl FailedCheck {
    /// A failed check with its explanations.
    pub fn new(
        reason: Reason,
        field: &'static str,
        message_zh: impl Into<String>,
        message_en: impl Into<String>,
    ) -> Self {
        FailedCheck {
            reason,
            field,
            message_zh: message_zh.into(),
            message_en: message_en.into(),
        }
    }
}

/// One check an evaluation ran, passed or failed: its reason code (the one a failure gives), the
/// request field it concerns, and what it found in both languages (what passing means, or the
/// failure's explanation). Recorded for every check, so that an explanation of a decision lists
/// the checks its policy version actually ran, not a list known elsewhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckOutcome {
    /// The stable reason code of the check (as a failure would give it).
    pub reason: Reason,
    /// The request field, for example `claim.buyer_uscc`; empty when several fields.
    pub field: &'static str,
    /// Whether the check passed.
    pub passed: bool,
    /// What the check found, in Simplified Chinese.
    pub message_zh: String,
    /// What the check found, in English.
    pub message_en: String,
}

impl CheckOutcome {
    /// A passed check with what passing means.
    pub fn passed(
        reason: Reason,
        field: &'static str,
        message_zh: impl Into<String>,
        message_en: impl Into<String>,
    ) -> Self {
        CheckOutcome {
            reason,
            field,
            passed: true,
            message_zh: message_zh.into(),
            message_en: message_en.into(),
        }
    }

    /// The outcome of a failed check, with its explanations.
    pub fn failed(check: &FailedCheck) -> Self {
        CheckOutcome {
            reason: check.reason,
            field: check.field,
            passed: false,
            message_zh: check.message_zh.clone(),
            message_en: check.message_en.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn amounts_in_explanations_are_grouped_by_thousands() {
        // Proves: explanations show amounts the way applicants read them (`Money::grouped`,
        // which the explanations use).
        let five_million = subsidy_common::Money::from_yuan(5_000_000).unwrap();
        assert_eq!(five_million.grouped(), "5,000,000.00");
        assert_eq!(
            subsidy_common::Money::from_fen(1).unwrap().grouped(),
            "0.01"
        );
    }
}
