//! Budget domain: validated commands, pool configuration, the ledger's canonical form, and the
//! errors a caller can act on. No tonic, no sqlx.

use std::fmt;

use sha2::{Digest, Sha256};
use subsidy_common::db::DbError;
use subsidy_common::{Money, RequestId, Uscc};
use subsidy_proto::status::FieldViolation;

/// Default hold lifetime when neither the request nor the pool says: 30 days, in seconds.
pub const HOLD_SECONDS_DEFAULT: i64 = 30 * 24 * 3600;
/// Longest hold lifetime accepted: one year, in seconds.
pub const HOLD_SECONDS_MAX: i64 = 366 * 24 * 3600;
/// Longest reference, in bytes.
pub const REFERENCE_LEN_MAX: usize = 128;
/// Longest release reason, in bytes.
pub const REASON_LEN_MAX: usize = 500;
/// Longest display name, in bytes.
pub const DISPLAY_NAME_LEN_MAX: usize = 200;
/// The hash before the first entry of a chain.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The seeded pool of AI compute vouchers.
pub const COMPUTE_VOUCHER_2025: &str = "compute-voucher-2025";
/// The seeded pool of data-infrastructure benchmark projects.
pub const DATA_INFRA_2025: &str = "data-infra-2025";

/// A pool identifier: 3 to 63 characters of `a-z`, `0-9` and `-`, starting with a letter.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolId(String);

impl PoolId {
    /// Validates a pool identifier.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let valid = (3..=63).contains(&text.len())
            && text.starts_with(|c: char| c.is_ascii_lowercase())
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid {
            Ok(PoolId(text.to_owned()))
        } else {
            Err("must be 3 to 63 characters of a-z, 0-9 and -, starting with a letter")
        }
    }

    /// The identifier as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PoolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The configuration of a new pool.
#[derive(Clone, Debug)]
pub struct NewPool {
    /// Identifier.
    pub pool_id: PoolId,
    /// Human-readable name.
    pub display_name: String,
    /// Total; positive.
    pub total: Money,
    /// Cumulative cap per beneficiary.
    pub beneficiary_cap: Option<Money>,
    /// Cap of one reservation.
    pub reservation_cap: Option<Money>,
    /// Default hold lifetime in seconds.
    pub default_hold_seconds: i64,
}

/// The two 2025 pools of POLICY.md.
pub fn seeded_pools_2025() -> Vec<NewPool> {
    let yuan = |n| Money::from_yuan(n).expect("seed amounts are small");
    vec![
        NewPool {
            pool_id: PoolId(COMPUTE_VOUCHER_2025.into()),
            display_name: "2025 AI compute vouchers (人工智能算力券)".into(),
            total: yuan(30_000_000),
            beneficiary_cap: Some(yuan(5_000_000)),
            reservation_cap: None,
            default_hold_seconds: 90 * 24 * 3600,
        },
        NewPool {
            pool_id: PoolId(DATA_INFRA_2025.into()),
            display_name: "2025 data-infrastructure benchmark projects (数据基础设施标杆工程)"
                .into(),
            total: yuan(40_000_000),
            beneficiary_cap: None,
            reservation_cap: Some(yuan(10_000_000)),
            default_hold_seconds: 180 * 24 * 3600,
        },
    ]
}

/// A validated reserve command.
#[derive(Clone, Debug)]
pub struct Reserve {
    /// Idempotency key.
    pub request_id: RequestId,
    /// Pool.
    pub pool_id: PoolId,
    /// Beneficiary.
    pub beneficiary: Uscc,
    /// Positive amount.
    pub amount: Money,
    /// Caller's reference.
    pub reference: String,
    /// Lifetime in seconds; `None` means the pool's default.
    pub hold_seconds: Option<i64>,
}

/// A validated commit command.
#[derive(Clone, Debug)]
pub struct Commit {
    /// Idempotency key.
    pub request_id: RequestId,
    /// Reservation.
    pub reservation_id: String,
    /// Positive amount ≤ the hold.
    pub amount: Money,
}

/// A validated release command.
#[derive(Clone, Debug)]
pub struct Release {
    /// Idempotency key.
    pub request_id: RequestId,
    /// Reservation.
    pub reservation_id: String,
    /// Why.
    pub reason: String,
}

/// What the budget refuses, and why. Classified into gRPC codes once, in `grpc.rs`.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    /// The request is malformed; nothing was written.
    #[error("invalid request")]
    Invalid(Vec<FieldViolation>),
    /// No such pool.
    #[error("pool not found")]
    PoolNotFound,
    /// A pool with this id exists.
    #[error("pool already exists")]
    PoolAlreadyExists,
    /// No such reservation.
    #[error("reservation not found")]
    ReservationNotFound,
    /// The pool has less available than asked.
    #[error("the pool does not have the amount available")]
    PoolExhausted,
    /// The beneficiary would exceed its cumulative cap.
    #[error("the beneficiary would exceed its cap")]
    BeneficiaryCapExceeded,
    /// The amount is above the pool's per-reservation cap.
    #[error("the amount exceeds the pool's per-reservation cap")]
    ReservationCapExceeded,
    /// The reservation is not HELD (committed, released, or expired).
    #[error("the reservation is not held")]
    ReservationNotHeld,
    /// The commit amount is above the held amount.
    #[error("the commit amount exceeds the hold")]
    CommitExceedsHold,
    /// The request id was used for a different request.
    #[error("request_id was used for a different request")]
    RequestIdReused,
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for BudgetError {
    fn from(error: sqlx::Error) -> Self {
        BudgetError::Db(DbError::from(error))
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_ids_are_validated() {
        assert!(PoolId::parse("compute-voucher-2025").is_ok());
        for bad in ["", "ab", "Compute", "9pool", "pool_1", &"a".repeat(64)] {
            assert!(PoolId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_entry_hash_covers_every_field() {
        let entry = LedgerEntry {
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
        };
        let base = entry.hash();
        let mut changed = entry.clone();
        changed.amount_fen = 2;
        assert_ne!(changed.hash(), base);
        let mut changed = entry.clone();
        changed.previous_hash = "1".into();
        assert_ne!(changed.hash(), base);
        assert_eq!(entry.hash(), base);
    }
}
