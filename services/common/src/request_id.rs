//! The idempotency key every mutating RPC carries.

use std::fmt;

/// The longest accepted `request_id`, in bytes.
pub const REQUEST_ID_LEN_MAX: usize = 128;

/// Why a text is not a request id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestIdError {
    /// Empty.
    #[error("request_id is required")]
    Empty,
    /// Longer than [`REQUEST_ID_LEN_MAX`].
    #[error("request_id must be at most 128 characters")]
    TooLong,
    /// Contains a character outside printable ASCII.
    #[error("request_id must be printable ASCII without spaces")]
    Character,
}

/// A validated request id: 1 to 128 printable ASCII characters without spaces.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    /// Validates `text` as a request id.
    pub fn parse(text: &str) -> Result<Self, RequestIdError> {
        if text.is_empty() {
            return Err(RequestIdError::Empty);
        }
        if text.len() > REQUEST_ID_LEN_MAX {
            return Err(RequestIdError::TooLong);
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(RequestIdError::Character);
        }
        Ok(RequestId(text.to_owned()))
    }

    /// A derived id for a step of a larger operation, e.g. `claim-42/reserve`. Stays within the
    /// length limit by hashing long inputs.
    pub fn derived(parent: &str, step: &str) -> Self {
        let text = format!("{parent}/{step}");
        if text.len() <= REQUEST_ID_LEN_MAX && text.bytes().all(|b| b.is_ascii_graphic()) {
            return RequestId(text);
        }
        use sha2::Digest;
        RequestId(format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(text.as_bytes()))
        ))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({})", self.0)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_bounded_and_printable() {
        assert_eq!(RequestId::parse(""), Err(RequestIdError::Empty));
        assert_eq!(
            RequestId::parse(&"a".repeat(129)),
            Err(RequestIdError::TooLong)
        );
        assert_eq!(RequestId::parse("a b"), Err(RequestIdError::Character));
        assert!(RequestId::parse(&"a".repeat(128)).is_ok());
        assert!(
            RequestId::derived(&"x".repeat(200), "reserve")
                .as_str()
                .len()
                <= 128
        );
    }
}
