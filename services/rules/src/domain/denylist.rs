//! The dishonesty denylist (失信名单): enterprises whose claims fail `BUYER_ON_DENYLIST`. It is
//! replaced whole by an administrative call; its canonical form is hashed so that callers can
//! tell which list a decision saw.

use std::collections::HashSet;

use chrono::NaiveDate;
use serde_json::{Value, json};
use subsidy_common::Uscc;

/// Most entries of the list.
pub const ENTRIES_MAX: usize = 20_000;
/// Longest reason, in characters.
pub const REASON_CHARS_MAX: usize = 500;
/// Longest source, in characters.
pub const SOURCE_CHARS_MAX: usize = 200;

/// One listed enterprise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DenylistEntry {
    /// The enterprise.
    pub uscc: Uscc,
    /// Why it is listed; 1 to 500 characters.
    pub reason: String,
    /// Who lists it; 1 to 200 characters.
    pub source: String,
    /// When the source listed it, if it says.
    pub listed_date: Option<NaiveDate>,
}

impl DenylistEntry {
    fn canonical(&self) -> Value {
        let mut value = json!({
            "uscc": self.uscc.as_str(),
            "reason": self.reason,
            "source": self.source,
        });
        if let Some(day) = self.listed_date {
            value["listed_date"] = Value::String(day.to_string());
        }
        value
    }
}

/// What a replacement of the denylist did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replacement {
    /// Entries of the new list.
    pub entry_count: i64,
    /// Codes not on the previous list.
    pub added_count: i64,
    /// Codes of the previous list no longer listed.
    pub removed_count: i64,
    /// The new list's hash.
    pub content_sha256: String,
    /// When, µs.
    pub replaced_us: i64,
}

/// What replacing the list of `previous` codes with `entries` (codes unique) does; the new
/// list hashes to `content_sha256` and is in place from `replaced_us`.
pub fn replacement(
    previous: &HashSet<String>,
    entries: &[DenylistEntry],
    content_sha256: String,
    replaced_us: i64,
) -> Replacement {
    let current: HashSet<&str> = entries.iter().map(|e| e.uscc.as_str()).collect();
    let added = current.iter().filter(|c| !previous.contains(**c)).count();
    let removed = previous
        .iter()
        .filter(|c| !current.contains(c.as_str()))
        .count();
    Replacement {
        entry_count: entries.len() as i64,
        added_count: added as i64,
        removed_count: removed as i64,
        content_sha256,
        replaced_us,
    }
}

/// The lower-case hex SHA-256 of the list's canonical form: entries in order of USCC, as
/// canonical JSON (RFC 8785); the empty list is `[]`.
pub fn content_sha256(entries: &[DenylistEntry]) -> String {
    let mut sorted: Vec<&DenylistEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.uscc.cmp(&b.uscc));
    super::canonical::sha256(&Value::Array(
        sorted.into_iter().map(DenylistEntry::canonical).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u32, reason: &str) -> DenylistEntry {
        DenylistEntry {
            uscc: subsidy_common::uscc::complete(&format!("91370100MA{n:07}")),
            reason: reason.into(),
            source: "信用中国".into(),
            listed_date: NaiveDate::from_ymd_opt(2025, 3, 1),
        }
    }

    #[test]
    fn the_hash_ignores_entry_order_and_covers_every_field() {
        // Proves: the same list in another order has the same hash; a changed reason does not.
        let a = [entry(1, "x"), entry(2, "y")];
        let b = [entry(2, "y"), entry(1, "x")];
        assert_eq!(content_sha256(&a), content_sha256(&b));
        let c = [entry(1, "x"), entry(2, "z")];
        assert_ne!(content_sha256(&a), content_sha256(&c));
        assert_eq!(
            content_sha256(&[]),
            "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945"
        );
    }
}
