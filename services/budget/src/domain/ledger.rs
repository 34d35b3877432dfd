//! The ledger: one entry per change of a pool, hash-chained per pool. Each entry's hash covers
//! its fields and the hash of the pool's previous entry, so changing, removing or reordering
//! an entry breaks the chain from there on.

use sha2::{Digest, Sha256};

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
}

impl LedgerEntry {
    /// The SHA-256 (lower-case hex) of the entry's canonical form: version tag and every field,
    /// `|`-separated, in declaration order, ending with the previous hash.
    pub fn hash(&self) -> String {
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
        if entry.hash() != stored_hash {
            return Err("entry_hash does not match the entry's content".to_owned());
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
        }
    }

    #[test]
    fn the_entry_hash_covers_every_field() {
        let entry = entry();
        let base = entry.hash();
        let mut changed = entry.clone();
        changed.amount_fen = 2;
        assert_ne!(changed.hash(), base);
        let mut changed = entry.clone();
        changed.previous_hash = "1".into();
        assert_ne!(changed.hash(), base);
        assert_eq!(entry.hash(), base);
    }

    #[test]
    fn a_chain_head_follows_only_the_next_entry() {
        // Proves a gap, a wrong link and a changed entry are each named.
        let first = entry();
        let hash = first.hash();
        let mut head = ChainHead::default();
        assert_eq!(head.follow(&first, &hash), Ok(()));
        let mut second = first.clone();
        second.sequence = 3;
        second.previous_hash = hash.clone();
        assert!(
            head.clone()
                .follow(&second, &second.hash())
                .unwrap_err()
                .contains("follows")
        );
        second.sequence = 2;
        second.previous_hash = GENESIS_HASH.into();
        assert!(
            head.clone()
                .follow(&second, &second.hash())
                .unwrap_err()
                .contains("previous_hash")
        );
        second.previous_hash = hash;
        assert!(head.follow(&second, "00").unwrap_err().contains("content"));
    }
}
