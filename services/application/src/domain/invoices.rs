//! The invoices of a claim, pure: the shape of a Chinese VAT invoice's identity and the checks
//! an invoice must pass against its claim (parties, date, the claim's invoiced total).

use chrono::NaiveDate;
use subsidy_common::{Money, Uscc};

/// Most invoices in one submission or one `AddClaimInvoices` call.
pub const INVOICES_PER_CALL_MAX: usize = 100;
/// Most invoices one claim carries.
pub const INVOICES_PER_CLAIM_MAX: usize = 500;

/// Whether `code` and `number` identify a VAT invoice: an 8-digit number with a 10-digit
/// (paper VAT invoice) or 12-digit (electronic ordinary or roll invoice) code, or a 20-digit
/// number without a code (a fully digitalised electronic invoice).
pub fn is_invoice_identity(code: &str, number: &str) -> bool {
    let digits = |text: &str| text.bytes().all(|b| b.is_ascii_digit());
    if !digits(code) || !digits(number) {
        return false;
    }
    matches!((code.len(), number.len()), (10, 8) | (12, 8) | (0, 20))
}

/// A reviewer's verification of an invoice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvoiceVerification {
    /// Not decided yet.
    Unverified,
    /// Verified: counts toward the verified amount.
    Verified,
    /// Not verified: does not count.
    Rejected,
}

impl InvoiceVerification {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unverified => "UNVERIFIED",
            Self::Verified => "VERIFIED",
            Self::Rejected => "REJECTED",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "UNVERIFIED" => Some(Self::Unverified),
            "VERIFIED" => Some(Self::Verified),
            "REJECTED" => Some(Self::Rejected),
            _ => None,
        }
    }
}

/// A validated invoice as given by the applicant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewInvoice {
    /// The invoice code; empty for a fully digitalised invoice.
    pub code: String,
    /// The invoice number.
    pub number: String,
    /// The issue date (Asia/Shanghai).
    pub issue_date: NaiveDate,
    /// The tax-inclusive total.
    pub amount: Money,
    /// The seller (issuer).
    pub seller: Uscc,
    /// The buyer.
    pub buyer: Uscc,
}

/// Why invoices cannot be added to a claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InvoiceProblem {
    /// The invoice's seller is not the contract's, or its buyer not the claiming enterprise.
    PartyMismatch {
        /// The invoice's code and number.
        key: (String, String),
    },
    /// Issued before the contract was signed, or in the future.
    DateOutOfRange {
        /// The invoice's code and number.
        key: (String, String),
    },
    /// The same invoice twice in the claim.
    Repeated {
        /// The invoice's code and number.
        key: (String, String),
    },
    /// The claim's invoiced total would exceed the contract total.
    TotalExceedsContract {
        /// The invoiced total the claim would have.
        invoiced: Money,
    },
}

/// What a claim's invoices are checked against.
#[derive(Clone, Debug)]
pub struct InvoiceTerms<'a> {
    /// The contract's seller.
    pub seller: &'a str,
    /// The claiming enterprise.
    pub buyer: &'a str,
    /// The contract's signing date.
    pub signing_date: NaiveDate,
    /// Today (Asia/Shanghai).
    pub today: NaiveDate,
    /// The contract total.
    pub contract_total: Money,
}

/// Checks `new` invoices to be added to a claim that already has the invoices `existing`
/// (their codes and numbers and their invoiced total): every invoice between the contract's
/// parties, dated from the signing date to today, none twice, and the total within the
/// contract's.
pub fn check_invoices(
    terms: &InvoiceTerms<'_>,
    existing: &[(String, String)],
    existing_total: Money,
    new: &[NewInvoice],
) -> Result<(), InvoiceProblem> {
    let mut seen: Vec<(String, String)> = existing.to_vec();
    let mut total = existing_total;
    for invoice in new {
        let key = (invoice.code.clone(), invoice.number.clone());
        if invoice.seller.as_str() != terms.seller || invoice.buyer.as_str() != terms.buyer {
            return Err(InvoiceProblem::PartyMismatch { key });
        }
        if invoice.issue_date < terms.signing_date || invoice.issue_date > terms.today {
            return Err(InvoiceProblem::DateOutOfRange { key });
        }
        if seen.contains(&key) {
            return Err(InvoiceProblem::Repeated { key });
        }
        seen.push(key);
        total = total
            .checked_add(invoice.amount)
            .ok_or(InvoiceProblem::TotalExceedsContract { invoiced: total })?;
    }
    if total > terms.contract_total {
        return Err(InvoiceProblem::TotalExceedsContract { invoiced: total });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uscc(text: &str) -> Uscc {
        Uscc::parse(text).expect("valid")
    }

    #[test]
    fn vat_invoice_identities_take_the_three_known_shapes() {
        // Proves the accepted code/number shapes and that anything else is refused.
        assert!(is_invoice_identity("3700191130", "01234567"));
        assert!(is_invoice_identity("037001900111", "01234567"));
        assert!(is_invoice_identity("", "25372000000012345678"));
        assert!(!is_invoice_identity("", "01234567"));
        assert!(!is_invoice_identity("3700191130", "25372000000012345678"));
        assert!(!is_invoice_identity("37001911", "01234567"));
        assert!(!is_invoice_identity("370019113A", "01234567"));
        assert!(!is_invoice_identity("3700191130", "0123456"));
    }

    #[test]
    fn invoices_are_checked_against_parties_dates_repeats_and_the_contract_total() {
        // Proves each refusal of check_invoices and that a fitting set passes.
        let seller = "91350100M000100Y43";
        let buyer = "91110108551385082Q";
        let (seller_uscc, buyer_uscc) = (uscc(seller), uscc(buyer));
        let day = |d| NaiveDate::from_ymd_opt(2025, 3, d).expect("date");
        let terms = InvoiceTerms {
            seller: seller_uscc.as_str(),
            buyer: buyer_uscc.as_str(),
            signing_date: day(10),
            today: day(20),
            contract_total: Money::from_yuan(100).expect("money"),
        };
        let invoice = |number: &str, d, yuan| NewInvoice {
            code: String::new(),
            number: number.to_owned(),
            issue_date: day(d),
            amount: Money::from_yuan(yuan).expect("money"),
            seller: uscc(seller),
            buyer: uscc(buyer),
        };
        let a = invoice("00000000000000000001", 10, 60);
        let b = invoice("00000000000000000002", 20, 40);
        assert_eq!(
            check_invoices(&terms, &[], Money::ZERO, &[a.clone(), b.clone()]),
            Ok(())
        );
        assert!(matches!(
            check_invoices(
                &terms,
                &[],
                Money::from_yuan(1).expect("m"),
                &[a.clone(), b.clone()]
            ),
            Err(InvoiceProblem::TotalExceedsContract { .. })
        ));
        assert!(matches!(
            check_invoices(&terms, &[], Money::ZERO, &[a.clone(), a.clone()]),
            Err(InvoiceProblem::Repeated { .. })
        ));
        assert!(matches!(
            check_invoices(
                &terms,
                &[],
                Money::ZERO,
                &[invoice("00000000000000000003", 9, 1)]
            ),
            Err(InvoiceProblem::DateOutOfRange { .. })
        ));
        assert!(matches!(
            check_invoices(
                &terms,
                &[],
                Money::ZERO,
                &[invoice("00000000000000000003", 21, 1)]
            ),
            Err(InvoiceProblem::DateOutOfRange { .. })
        ));
        let mut swapped = invoice("00000000000000000004", 15, 1);
        std::mem::swap(&mut swapped.seller, &mut swapped.buyer);
        assert!(matches!(
            check_invoices(&terms, &[], Money::ZERO, &[swapped]),
            Err(InvoiceProblem::PartyMismatch { .. })
        ));
    }
}
