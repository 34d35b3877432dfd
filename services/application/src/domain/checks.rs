//! Shape checks of what applicants and reviewers send, and the checks that need the time or the
//! recorded amount (handed in): a payment matches what was approved and is not dated in the
//! future, a deadline lies ahead but not too far.

use chrono::NaiveDate;
use subsidy_common::Money;

use super::{
    DEADLINE_AHEAD_US_MAX, DIVISION_CODE_LEN, FILE_NAME_LEN_MAX, POOL_ID_LEN_MAX, POOL_ID_LEN_MIN,
};

/// What is wrong with one field of an input: the field's path and why its value is not
/// accepted. The edge reports it as a field violation (see `error.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldProblem {
    /// The path of the field, for example `payment_date`.
    pub field: &'static str,
    /// Why the value is not accepted.
    pub description: String,
}

impl FieldProblem {
    /// A problem of `field`.
    pub fn new(field: &'static str, description: impl Into<String>) -> Self {
        Self {
            field,
            description: description.into(),
        }
    }
}

/// Whether `text` is a 6-digit administrative division code.
pub fn is_division_code(text: &str) -> bool {
    text.len() == DIVISION_CODE_LEN && text.bytes().all(|b| b.is_ascii_digit())
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

/// Whether `text` is a budget pool identifier: 3 to 63 characters of a-z, 0-9 and `-`,
/// starting with a letter.
pub fn is_pool_id(text: &str) -> bool {
    (POOL_ID_LEN_MIN..=POOL_ID_LEN_MAX).contains(&text.len())
        && text.starts_with(|c: char| c.is_ascii_lowercase())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// What is wrong with a payment of `amount` on `payment_date` for an application approved or
/// awarded `expected`, judged on `today` (Asia/Shanghai): it must be the whole amount, and not
/// dated in the future.
pub fn payment_violations(
    amount: Money,
    expected: Money,
    payment_date: NaiveDate,
    today: NaiveDate,
) -> Vec<FieldProblem> {
    let mut violations = Vec::new();
    if amount != expected {
        violations.push(FieldProblem::new(
            "amount",
            format!("must equal the approved or awarded amount {expected}"),
        ));
    }
    if payment_date > today {
        violations.push(FieldProblem::new(
            "payment_date",
            "must not be in the future (Asia/Shanghai)",
        ));
    }
    violations
}

/// What is wrong with a submission deadline at `deadline_us` set at `now_us`, if anything: it
/// must lie ahead, and at most [`DEADLINE_AHEAD_US_MAX`] ahead.
pub fn deadline_violation(deadline_us: i64, now_us: i64) -> Option<&'static str> {
    if deadline_us <= now_us {
        Some("must be in the future")
    } else if deadline_us - now_us > DEADLINE_AHEAD_US_MAX {
        Some("must be at most one year ahead")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_payment_is_the_whole_amount_and_not_dated_ahead() {
        // Proves the two payment checks, each naming its field.
        let day = |d| NaiveDate::from_ymd_opt(2025, 6, d).unwrap();
        let yuan = |n| Money::from_yuan(n).unwrap();
        assert!(payment_violations(yuan(5), yuan(5), day(2), day(2)).is_empty());
        let fields: Vec<_> = payment_violations(yuan(4), yuan(5), day(3), day(2))
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["amount", "payment_date"]);
    }

    #[test]
    fn a_deadline_lies_ahead_but_at_most_a_year() {
        // Proves the deadline window of a new round.
        assert_eq!(deadline_violation(10, 10), Some("must be in the future"));
        assert_eq!(deadline_violation(11, 10), None);
        assert!(deadline_violation(DEADLINE_AHEAD_US_MAX + 11, 10).is_some());
        assert!(is_pool_id("data-infra-2025") && !is_pool_id("9pool") && !is_pool_id("ab"));
    }
}
