//! Pagination: page sizes with a default and a maximum, opaque page tokens.

/// Why a page request is not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// `page_size` is negative.
    #[error("page_size must not be negative")]
    NegativeSize,
    /// `page_token` was not produced by this service.
    #[error("page_token is not valid")]
    BadToken,
}

/// Resolves a requested page size: 0 means `default`, larger than `max` is clamped to `max`.
pub fn page_size(requested: i32, default: u32, max: u32) -> Result<u32, PageError> {
    match requested {
        n if n < 0 => Err(PageError::NegativeSize),
        0 => Ok(default),
        n => Ok((n as u32).min(max)),
    }
}

/// Encodes a keyset position (for example the last row's key) as an opaque token.
pub fn encode_token(kind: &str, key: &str) -> String {
    hex::encode(format!("{kind}:{key}"))
}

/// Decodes a token made by [`encode_token`] with the same `kind`; an empty token is the start.
pub fn decode_token(kind: &str, token: &str) -> Result<Option<String>, PageError> {
    if token.is_empty() {
        return Ok(None);
    }
    let bytes = hex::decode(token).map_err(|_| PageError::BadToken)?;
    let text = String::from_utf8(bytes).map_err(|_| PageError::BadToken)?;
    let key = text
        .strip_prefix(kind)
        .and_then(|rest| rest.strip_prefix(':'))
        .ok_or(PageError::BadToken)?;
    Ok(Some(key.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_foreign_kinds() {
        let token = encode_token("ledger", "42");
        assert_eq!(decode_token("ledger", &token), Ok(Some("42".into())));
        assert_eq!(decode_token("pool", &token), Err(PageError::BadToken));
        assert_eq!(decode_token("pool", "zz"), Err(PageError::BadToken));
        assert_eq!(decode_token("pool", ""), Ok(None));
        assert_eq!(page_size(0, 50, 500), Ok(50));
        assert_eq!(page_size(9999, 50, 500), Ok(500));
        assert_eq!(page_size(-1, 50, 500), Err(PageError::NegativeSize));
    }
}
