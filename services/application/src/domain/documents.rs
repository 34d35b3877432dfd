//! Documents, pure: their kinds, their identifiers, and the check of an upload's content
//! against its declared size and SHA-256 as the chunks arrive.

use sha2::{Digest, Sha256};

/// Prefix of document identifiers.
pub const DOCUMENT_ID_PREFIX: &str = "document-";
/// Longest media type accepted, in characters.
pub const MEDIA_TYPE_LEN_MAX: usize = 255;
/// Largest chunk a download sends, in bytes: 64 KiB.
pub const DOWNLOAD_CHUNK_BYTES_MAX: usize = 64 * 1024;

/// What a document is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DocumentKind {
    /// The compute transaction contract.
    Contract,
    /// An invoice.
    Invoice,
    /// A proof of payment.
    PaymentProof,
    /// A proposal file.
    Proposal,
    /// Anything else.
    Other,
}

impl DocumentKind {
    /// Its name in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentKind::Contract => "CONTRACT",
            DocumentKind::Invoice => "INVOICE",
            DocumentKind::PaymentProof => "PAYMENT_PROOF",
            DocumentKind::Proposal => "PROPOSAL",
            DocumentKind::Other => "OTHER",
        }
    }

    /// The kind named `name` in the database.
    pub fn parse(name: &str) -> Option<DocumentKind> {
        [
            DocumentKind::Contract,
            DocumentKind::Invoice,
            DocumentKind::PaymentProof,
            DocumentKind::Proposal,
            DocumentKind::Other,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == name)
    }
}

/// Whether `text` is a media type: `type/subtype` of printable ASCII without spaces, at most
/// [`MEDIA_TYPE_LEN_MAX`] characters (parameters such as `; charset=utf-8` are allowed).
pub fn is_media_type(text: &str) -> bool {
    let essence = text.split(';').next().unwrap_or_default();
    (1..=MEDIA_TYPE_LEN_MAX).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        && essence
            .split_once('/')
            .is_some_and(|(kind, sub)| !kind.is_empty() && !sub.is_empty() && !sub.contains('/'))
        && !essence.contains(' ')
}

/// Why an upload's content was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentProblem {
    /// More or fewer bytes than declared.
    SizeMismatch,
    /// Another SHA-256 than declared.
    DigestMismatch,
}

/// The check of an upload's content while it streams: counts and hashes every chunk, refuses
/// the first byte past the declared size (so at most the declared size, itself bounded by the
/// configured limit, is ever held), and at the end compares length and digest.
#[derive(Debug)]
pub struct ContentCheck {
    declared_size: u64,
    declared_sha256_hex: String,
    hasher: Sha256,
    content: Vec<u8>,
}

impl ContentCheck {
    /// A check of content declared as `declared_size` bytes with SHA-256 `declared_sha256_hex`.
    pub fn new(declared_size: u64, declared_sha256_hex: &str) -> Self {
        ContentCheck {
            declared_size,
            declared_sha256_hex: declared_sha256_hex.to_owned(),
            hasher: Sha256::new(),
            content: Vec::with_capacity(
                usize::try_from(declared_size).expect("a bounded size fits in memory"),
            ),
        }
    }

    /// Takes the next chunk; refused once the content would exceed the declared size.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), ContentProblem> {
        let after = self.content.len() as u64 + chunk.len() as u64;
        if after > self.declared_size {
            return Err(ContentProblem::SizeMismatch);
        }
        self.hasher.update(chunk);
        self.content.extend_from_slice(chunk);
        Ok(())
    }

    /// The content, when its length and digest are the declared ones.
    pub fn finish(self) -> Result<Vec<u8>, ContentProblem> {
        if self.content.len() as u64 != self.declared_size {
            return Err(ContentProblem::SizeMismatch);
        }
        if hex::encode(self.hasher.finalize()) != self.declared_sha256_hex {
            return Err(ContentProblem::DigestMismatch);
        }
        Ok(self.content)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(content: &[u8]) -> String {
        hex::encode(Sha256::digest(content))
    }

    #[test]
    fn content_is_accepted_only_with_its_declared_size_and_digest() {
        // Proves the content check accepts exactly the declared bytes, refuses a byte too many
        // as soon as it arrives, and tells a short or altered content apart.
        let content = b"compute contract";
        let mut check = ContentCheck::new(content.len() as u64, &sha(content));
        check.push(&content[..7]).unwrap();
        check.push(&content[7..]).unwrap();
        assert_eq!(check.finish().unwrap(), content);

        let mut check = ContentCheck::new(4, &sha(content));
        assert_eq!(check.push(content), Err(ContentProblem::SizeMismatch));

        let mut check = ContentCheck::new(content.len() as u64, &sha(content));
        check.push(&content[..3]).unwrap();
        assert_eq!(check.finish(), Err(ContentProblem::SizeMismatch));

        let mut check = ContentCheck::new(content.len() as u64, &sha(b"compute contracT"));
        check.push(content).unwrap();
        assert_eq!(check.finish(), Err(ContentProblem::DigestMismatch));
    }

    #[test]
    fn media_types_and_kinds_are_recognised() {
        // Proves the media type check and the kinds' database names.
        assert!(is_media_type("application/pdf"));
        assert!(is_media_type("text/plain; charset=utf-8"));
        assert!(!is_media_type("pdf"));
        assert!(!is_media_type("application/"));
        assert!(!is_media_type("a/b/c"));
        assert!(!is_media_type(""));
        for kind in ["CONTRACT", "INVOICE", "PAYMENT_PROOF", "PROPOSAL", "OTHER"] {
            assert_eq!(DocumentKind::parse(kind).unwrap().as_str(), kind);
        }
        assert_eq!(DocumentKind::parse("X"), None);
    }
}
