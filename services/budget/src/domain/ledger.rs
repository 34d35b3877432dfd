//! The ledger: one entry per change of a pool, hash-chained per pool. Each entry's hash covers
//! its fields and the hash of the pool's previous entry, so changing, removing or reordering
//! an entry breaks the chain from there on.

use sha2::{Digest, Sha256};

/// The encoding of entries written before the canonical encoding: fields joined with `|`
/// (ambiguous when a free-text field holds `|`). Such entries are verified under it.
pub const HASH_VERSION_PIPES: i64 = 1;
/// The canonical encoding every new entry is hashed with (`docs/LEDGER.md`): a tag, then each
/// field length-prefixed (text) or fixed-width (integers), so no two entries encode alike.
pub const HASH_VERSION_CANONICAL: i64 = 2;
/// The tag that starts a canonical encoding.
const CANONICAL_TAG: &[u8] = b"subsidy.ledger.v2";

/// The hash before the first entry of a chain.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The kind of a ledger entry, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LedgerKind {
    /// A pool was created.
    PoolCreated,
    /// Money was held.
    Reserved,
    /// A hold was committed.
    Committed,
    /// A hold was released.
    Released,
    /// A hold expired.
    Expired,
    /// The pool was closed to new holds.
    PoolClosed,
    /// A hold's expiry moved later.
    Extended,
    /// A commitment was revoked.
    Revoked,
}

impl LedgerKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerKind::PoolCreated => "POOL_CREATED",
            LedgerKind::Reserved => "RESERVED",
            LedgerKind::Committed => "COMMITTED",
            LedgerKind::Released => "RELEASED",
            LedgerKind::Expired => "EXPIRED",
            LedgerKind::PoolClosed => "POOL_CLOSED",
            LedgerKind::Extended => "EXTENDED",
            LedgerKind::Revoked => "REVOKED",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::PoolCreated,
            Self::Reserved,
            Self::Committed,
            Self::Released,
            Self::Expired,
            Self::PoolClosed,
            Self::Extended,
            Self::Revoked,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == text)
    }
}

/// One ledger entry, as hashed and stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    /// Pool.
    pub pool_id: String,
    /// Position in the pool's chain, from 1.
    pub sequence: i64,
    /// Kind, as stored.
    pub kind: String,
    /// Reservation, or empty.
    pub reservation_id: String,
    /// Beneficiary, or empty.
    pub beneficiary_uscc: String,
    /// Who asked.
    pub actor: String,
    /// Which request, or empty.
    pub request_id: String,
    /// Amount moved.
    pub amount_fen: i64,
    /// Remainder returned by a partial commit.
    pub released_fen: i64,
    /// Pool held before.
    pub held_before_fen: i64,
    /// Pool held after.
    pub held_after_fen: i64,
    /// Pool committed before.
    pub committed_before_fen: i64,
    /// Pool committed after.
    pub committed_after_fen: i64,
    /// Database time, microseconds.
    pub created_us: i64,
    /// Hash of the previous entry of the pool.
    pub previous_hash: String,
    /// The encoding the hash covers: [`HASH_VERSION_CANONICAL`] for every new entry.
    pub hash_version: i64,
    /// The new expiry of an `EXTENDED` entry, µs; `None` for every other kind. Hashed only
    /// for `EXTENDED` entries (after `created_us`), so every earlier entry hashes as written.
    pub expires_us: Option<i64>,
}

impl LedgerEntry {
    /// The SHA-256 (lower-case hex) of the entry's encoding under its `hash_version`; `None`
    /// for a version this build does not know.
    pub fn hash(&self) -> Option<String> {
        match self.hash_version {
            HASH_VERSION_PIPES => Some(self.hash_pipes()),
            HASH_VERSION_CANONICAL => Some(hex::encode(Sha256::digest(self.canonical()))),
            _ => None,
        }
    }

    /// The hash of a new entry, which always carries [`HASH_VERSION_CANONICAL`].
    pub fn seal(&self) -> String {
        debug_assert_eq!(self.hash_version, HASH_VERSION_CANONICAL);
        hex::encode(Sha256::digest(self.canonical()))
    }

    /// The canonical encoding (version 2), byte for byte as `docs/LEDGER.md` documents: the
    /// tag `subsidy.ledger.v2`, then every field in declaration order, text as its UTF-8 length
    /// (4 bytes, big-endian) and bytes, integers as 8 bytes big-endian two's complement. An
    /// `EXTENDED` entry has one more integer after `created_us`: its new expiry (0 if unset,
    /// which the replay refuses).
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        let text = |out: &mut Vec<u8>, value: &str| {
            let len = u32::try_from(value.len()).expect("ledger fields are far below 4 GiB");
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(value.as_bytes());
        };
        let int = |out: &mut Vec<u8>, value: i64| out.extend_from_slice(&value.to_be_bytes());
        text(
            &mut out,
            std::str::from_utf8(CANONICAL_TAG).expect("an ASCII tag"),
        );
        text(&mut out, &self.pool_id);
        int(&mut out, self.sequence);
        text(&mut out, &self.kind);
        text(&mut out, &self.reservation_id);
        text(&mut out, &self.beneficiary_uscc);
        text(&mut out, &self.actor);
        text(&mut out, &self.request_id);
        for value in [
            self.amount_fen,
            self.released_fen,
            self.held_before_fen,
            self.held_after_fen,
            self.committed_before_fen,
            self.committed_after_fen,
            self.created_us,
        ] {
            int(&mut out, value);
        }
        if self.kind == LedgerKind::Extended.as_str() {
            int(&mut out, self.expires_us.unwrap_or(0));
        }
        text(&mut out, &self.previous_hash);
        out
    }

    /// The version-1 hash: version tag and every field, `|`-separated, in declaration order,
    /// ending with the previous hash.
    fn hash_pipes(&self) -> String {
        let canonical = format!(
            "ledger-v1|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}",
            self.pool_id,
            self.sequence,
            self.kind,
            self.reservation_id,
            self.beneficiary_uscc,
            self.actor,
            self.request_id,
            self.amount_fen,
            self.released_fen,
            self.held_before_fen,
            self.held_after_fen,
            self.committed_before_fen,
            self.committed_after_fen,
            self.created_us,
            self.previous_hash,
        );
        hex::encode(Sha256::digest(canonical.as_bytes()))
    }
}

/// The head of one pool's chain while it is being checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainHead {
    /// The sequence of the last entry seen, 0 before the first.
    pub sequence: i64,
    /// The hash of the last entry seen, [`GENESIS_HASH`] before the first.
    pub hash: String,
}

impl Default for ChainHead {
    fn default() -> Self {
        ChainHead {
            sequence: 0,
            hash: GENESIS_HASH.to_owned(),
        }
    }
}

impl ChainHead {
    /// Checks that `entry`, stored with `stored_hash`, follows this head; on success the head
    /// moves to it, otherwise the problem is described.
    pub fn follow(&mut self, entry: &LedgerEntry, stored_hash: &str) -> Result<(), String> {
        if entry.sequence != self.sequence + 1 {
            return Err(format!(
                "sequence {} follows {}",
                entry.sequence, self.sequence
            ));
        }
        if entry.previous_hash != self.hash {
            return Err("previous_hash does not match the preceding entry".to_owned());
        }
        match entry.hash() {
            None => return Err(format!("unknown hash_version {}", entry.hash_version)),
            Some(hash) if hash != stored_hash => {
                return Err("entry_hash does not match the entry's content".to_owned());
            }
            Some(_) => {}
        }
        self.sequence = entry.sequence;
        self.hash = stored_hash.to_owned();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> LedgerEntry {
        LedgerEntry {
            pool_id: "p".into(),
            sequence: 1,
            kind: "RESERVED".into(),
            reservation_id: "r".into(),
            beneficiary_uscc: "u".into(),
            actor: "a".into(),
            request_id: "q".into(),
            amount_fen: 1,
            released_fen: 0,
            held_before_fen: 0,
            held_after_fen: 1,
            committed_before_fen: 0,
            committed_after_fen: 0,
            created_us: 5,
            previous_hash: GENESIS_HASH.into(),
            hash_version: HASH_VERSION_CANONICAL,
            expires_us: None,
        }
    }

    #[test]
    fn the_entry_hash_covers_every_field() {
        let entry = entry();
        let base = entry.hash().unwrap();
        let mut changed = entry.clone();
        changed.amount_fen = 2;
        assert_ne!(changed.hash().unwrap(), base);
        let mut changed = entry.clone();
        changed.previous_hash = "1".into();
        assert_ne!(changed.hash().unwrap(), base);
        assert_eq!(entry.hash().unwrap(), base);
    }

    #[test]
    fn the_encodings_match_the_documented_vectors() {
        // Proves the code hashes exactly what docs/LEDGER.md specifies: the expected values
        // were computed from the document alone (Python's struct and hashlib), not from this
        // code. Version 1 entries still hash as they were written.
        let entry = entry();
        assert_eq!(
            entry.hash().unwrap(),
            "0094d3ca3972b9a21edc986dd17c175a29fa53dc65fd35ef3c78d2f19ef4b100"
        );
        assert_eq!(entry.seal(), entry.hash().unwrap());
        let extended = LedgerEntry {
            kind: "EXTENDED".into(),
            amount_fen: 0,
            held_before_fen: 1,
            expires_us: Some(7),
            ..entry.clone()
        };
        assert_eq!(
            extended.seal(),
            "5cdb8775f718641e772c188c01a8294e02867b5f2ad0c1ad24b5889e78beffa1"
        );
        let legacy = LedgerEntry {
            hash_version: HASH_VERSION_PIPES,
            ..entry.clone()
        };
        assert_eq!(
            legacy.hash().unwrap(),
            "7c286fe89493b2f5b0b333ba28b6ceebf50acd15f5a83def002583fe596bb8d3"
        );
        let unknown = LedgerEntry {
            hash_version: 3,
            ..entry
        };
        assert_eq!(unknown.hash(), None);
        assert!(
            ChainHead::default()
                .follow(&unknown, "00")
                .unwrap_err()
                .contains("unknown hash_version 3")
        );
    }

    #[test]
    fn text_fields_cannot_run_into_each_other() {
        // Proves the ambiguity of version 1 is gone: moving a `|` between two free-text fields
        // gives the same version-1 text but a different canonical encoding.
        let mut one = entry();
        one.actor = "a|b".into();
        one.request_id = "c".into();
        let mut two = entry();
        two.actor = "a".into();
        two.request_id = "b|c".into();
        let pipes = |e: &LedgerEntry| {
            LedgerEntry {
                hash_version: HASH_VERSION_PIPES,
                ..e.clone()
            }
            .hash()
        };
        assert_eq!(pipes(&one), pipes(&two));
        assert_ne!(one.seal(), two.seal());
    }

    #[test]
    fn a_chain_head_follows_only_the_next_entry() {
        // Proves a gap, a wrong link and a changed entry are each named.
        let first = entry();
        let hash = first.seal();
        let mut head = ChainHead::default();
        assert_eq!(head.follow(&first, &hash), Ok(()));
        let mut second = first.clone();
        second.sequence = 3;
        second.previous_hash = hash.clone();
        assert!(
            head.clone()
                .follow(&second, &second.seal())
                .unwrap_err()
                .contains("follows")
        );
        second.sequence = 2;
        second.previous_hash = GENESIS_HASH.into();
        assert!(
            head.clone()
                .follow(&second, &second.seal())
                .unwrap_err()
                .contains("previous_hash")
        );
        second.previous_hash = hash;
        assert!(head.follow(&second, "00").unwrap_err().contains("content"));
    }
}
