//! Canonical JSON (RFC 8785) for the hashes the service publishes, and bounded JSON summaries for
//! decision traces.
//!
//! The values hashed here hold only strings, integers, booleans, null, arrays and objects with
//! ASCII keys: for those, RFC 8785 is "object members sorted by key, no whitespace, strings
//! escaped as ECMAScript's JSON.stringify does", which is what serde_json writes for a string.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Largest trace summary, in bytes.
pub const SUMMARY_BYTES_MAX: usize = 4096;

/// Writes `value` as canonical JSON: members sorted by key at every level, no whitespace.
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    write(value, &mut out);
    out
}

fn write(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push('{');
            for (i, (key, member)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write(member, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The lower-case hex SHA-256 of `value`'s canonical JSON.
pub fn sha256(value: &Value) -> String {
    hex::encode(Sha256::digest(to_string(value).as_bytes()))
}

/// A JSON object summarising `value` in at most [`SUMMARY_BYTES_MAX`] bytes: the canonical JSON
/// of `value` (wrapped as `{"value": …}` when it is not an object), or, when that is too long,
/// `{"sha256": …, "size_bytes": …, "truncated": true}` naming what was left out.
pub fn summary(value: &Value) -> String {
    let object = match value {
        Value::Object(_) => value.clone(),
        other => serde_json::json!({ "value": other }),
    };
    let text = to_string(&object);
    if text.len() <= SUMMARY_BYTES_MAX {
        return text;
    }
    format!(
        "{{\"sha256\":\"{}\",\"size_bytes\":{},\"truncated\":true}}",
        hex::encode(Sha256::digest(text.as_bytes())),
        text.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn members_are_sorted_at_every_level_without_whitespace() {
        // Proves: key order in the input does not change the canonical text or its hash.
        let a = json!({"b": 1, "a": {"d": [true, null], "c": "x\ny"}});
        let b = json!({"a": {"c": "x\ny", "d": [true, null]}, "b": 1});
        assert_eq!(to_string(&a), r#"{"a":{"c":"x\ny","d":[true,null]},"b":1}"#);
        assert_eq!(sha256(&a), sha256(&b));
        assert_eq!(
            sha256(&json!([])),
            "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945"
        );
    }

    #[test]
    fn long_summaries_are_replaced_by_a_truncated_marker() {
        // Proves: a summary never exceeds 4 KiB and says when it was truncated.
        let big = json!({ "text": "x".repeat(10_000) });
        let text = summary(&big);
        assert!(text.len() <= SUMMARY_BYTES_MAX);
        assert!(text.ends_with("\"truncated\":true}"), "{text}");
        assert_eq!(summary(&json!(5)), r#"{"value":5}"#);
    }
}
