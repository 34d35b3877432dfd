//! The Unified Social Credit Code (统一社会信用代码, GB 32100-2015).
//!
//! 18 characters from the code set `0-9 A-Z` without `I O S V Z`: registering authority (1),
//! organisation type (1), administrative division code (6 digits), organisation code (9) and a
//! check character computed modulo 31 over the first 17.

use std::fmt;

/// The 31 characters of the code set, in order of their values.
const CHARSET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
/// Weights of positions 1 to 17: 3^i mod 31.
const WEIGHTS: [u32; 17] = [
    1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
];
/// The length of a code.
pub const USCC_LEN: usize = 18;

/// Why a text is not a valid USCC.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UsccError {
    /// Not 18 characters.
    #[error("a USCC has 18 characters")]
    Length,
    /// A character outside the code set.
    #[error("character {0} is not in the USCC code set")]
    Character(usize),
    /// Characters 3 to 8 are not an administrative division code.
    #[error("characters 3 to 8 must be digits (an administrative division code)")]
    Division,
    /// The check character does not match.
    #[error("the check character does not match")]
    Check,
}

/// A valid USCC, stored upper-case.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Uscc(String);

fn value_of(byte: u8) -> Option<u32> {
    CHARSET.iter().position(|c| *c == byte).map(|i| i as u32)
}

/// Computes the check character for the first 17 characters of a code.
pub fn check_character(first17: &str) -> Result<char, UsccError> {
    let bytes = first17.as_bytes();
    if bytes.len() != USCC_LEN - 1 {
        return Err(UsccError::Length);
    }
    let mut sum = 0u32;
    for (i, byte) in bytes.iter().enumerate() {
        let value = value_of(byte.to_ascii_uppercase()).ok_or(UsccError::Character(i + 1))?;
        sum += value * WEIGHTS[i];
    }
    let check = (31 - sum % 31) % 31;
    Ok(CHARSET[check as usize] as char)
}

impl Uscc {
    /// Parses and validates a code (case-insensitive, surrounding spaces ignored).
    pub fn parse(text: &str) -> Result<Self, UsccError> {
        let code = text.trim().to_ascii_uppercase();
        if code.len() != USCC_LEN || !code.is_ascii() {
            return Err(UsccError::Length);
        }
        for (i, byte) in code.bytes().enumerate() {
            if value_of(byte).is_none() {
                return Err(UsccError::Character(i + 1));
            }
        }
        if !code.as_bytes()[2..8].iter().all(u8::is_ascii_digit) {
            return Err(UsccError::Division);
        }
        let expected = check_character(&code[..17])?;
        if code.as_bytes()[17] as char != expected {
            return Err(UsccError::Check);
        }
        Ok(Uscc(code))
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The six-digit administrative division code of the registering authority.
    pub fn division_code(&self) -> &str {
        &self.0[2..8]
    }

    /// Whether the registering authority is in Shandong (division code `37…`).
    pub fn is_registered_in_shandong(&self) -> bool {
        self.division_code().starts_with("37")
    }
}

impl fmt::Debug for Uscc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uscc({})", self.0)
    }
}

impl fmt::Display for Uscc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Builds a valid USCC from a 17-character prefix by appending its check character. For tests,
/// fixtures and demos.
pub fn complete(first17: &str) -> Uscc {
    let check = check_character(first17).expect("a 17-character prefix from the code set");
    Uscc::parse(&format!("{first17}{check}")).expect("a completed code is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_codes_validate() {
        // Codes printed on public business licences.
        for code in ["91350100M000100Y43", "91110108551385082Q"] {
            assert!(Uscc::parse(code).is_ok(), "{code}");
        }
    }

    #[test]
    fn a_corrupted_character_is_caught_by_the_check_character() {
        let good = "91350100M000100Y43";
        for i in 0..17 {
            let mut bytes = good.as_bytes().to_vec();
            bytes[i] = if bytes[i] == b'1' { b'2' } else { b'1' };
            let bad = String::from_utf8(bytes).unwrap();
            assert!(Uscc::parse(&bad).is_err(), "{bad}");
        }
        assert_eq!(Uscc::parse("91350100M000100Y44"), Err(UsccError::Check));
    }

    #[test]
    fn malformed_codes_are_rejected_with_the_reason() {
        assert_eq!(Uscc::parse("9135"), Err(UsccError::Length));
        assert_eq!(
            Uscc::parse("91350100M000100I43"),
            Err(UsccError::Character(16))
        );
        assert_eq!(Uscc::parse("91AB0100M000100Y43"), Err(UsccError::Division));
    }

    #[test]
    fn shandong_codes_are_recognised() {
        let code = complete("91370100MA3C00001");
        assert!(code.is_registered_in_shandong());
        assert_eq!(code.division_code(), "370100");
        assert!(
            !Uscc::parse("91350100M000100Y43")
                .unwrap()
                .is_registered_in_shandong()
        );
    }
}
