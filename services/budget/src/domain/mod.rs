//! The budget's domain: pools, reservations and beneficiaries' usage as values, the validated
//! commands, the ledger's entries and their hash chain, and the decisions ([`decide`]) that
//! say, for a batch of commands against a locked pool, what each one does. Pure: no database,
//! no wire, no clock (the database's time is handed in).

pub mod checkpoint;
pub mod decide;
pub mod ledger;
pub mod replay;

use std::fmt;

use subsidy_common::{Money, RequestId, Uscc};

pub use decide::{Batch, Effect, Refusal};
pub use ledger::{
    GENESIS_HASH, HASH_VERSION_CANONICAL, HASH_VERSION_PIPES, LedgerEntry, LedgerKind,
};

/// Default hold lifetime when neither the request nor the pool says: 30 days, in seconds.
pub const HOLD_SECONDS_DEFAULT: i64 = 30 * 24 * 3600;
/// Longest hold lifetime accepted: one year, in seconds.
pub const HOLD_SECONDS_MAX: i64 = 366 * 24 * 3600;
/// Longest reference, in characters.
pub const REFERENCE_LEN_MAX: usize = 128;
/// Longest release reason, in characters.
pub const REASON_LEN_MAX: usize = 500;
/// Longest display name, in characters.
pub const DISPLAY_NAME_LEN_MAX: usize = 200;
/// Longest reservation identifier accepted, in characters.
pub const RESERVATION_ID_LEN_MAX: usize = 64;
/// Microseconds in one second.
pub const MICROS_PER_SECOND: i64 = 1_000_000;

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

/// A pool: its configuration and counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    /// Identifier.
    pub pool_id: String,
    /// Name.
    pub display_name: String,
    /// Total, fen.
    pub total_fen: i64,
    /// Held, fen.
    pub held_fen: i64,
    /// Committed, fen.
    pub committed_fen: i64,
    /// Cap per beneficiary, fen.
    pub beneficiary_cap_fen: Option<i64>,
    /// Cap per reservation, fen.
    pub reservation_cap_fen: Option<i64>,
    /// Default hold lifetime.
    pub default_hold_seconds: i64,
    /// Reservations ever made.
    pub reservation_count: i64,
    /// Creation time, µs.
    pub created_us: i64,
    /// When the pool was closed to new holds, µs; `None` while open.
    pub closed_us: Option<i64>,
    /// Why it was closed.
    pub close_reason: Option<String>,
}

impl Pool {
    /// What is neither held nor committed, fen.
    pub fn available_fen(&self) -> i64 {
        self.total_fen - self.held_fen - self.committed_fen
    }

    /// Panics unless held + committed ≤ total and neither is negative: a violated invariant is
    /// a bug, never a user error.
    pub fn assert_invariants(&self) {
        assert!(
            self.held_fen >= 0
                && self.committed_fen >= 0
                && self.held_fen + self.committed_fen <= self.total_fen,
            "pool {} broke its invariant: held {} + committed {} of total {}",
            self.pool_id,
            self.held_fen,
            self.committed_fen,
            self.total_fen
        );
    }
}

/// The state of a reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReservationState {
    /// Held.
    Held,
    /// Committed.
    Committed,
    /// Released.
    Released,
    /// Expired.
    Expired,
    /// Committed, then revoked: the commitment returned to the pool. Final.
    Revoked,
}

impl ReservationState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationState::Held => "HELD",
            ReservationState::Committed => "COMMITTED",
            ReservationState::Released => "RELEASED",
            ReservationState::Expired => "EXPIRED",
            ReservationState::Revoked => "REVOKED",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        [
            ReservationState::Held,
            ReservationState::Committed,
            ReservationState::Released,
            ReservationState::Expired,
            ReservationState::Revoked,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }
}

/// A reservation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// Identifier.
    pub reservation_id: String,
    /// Pool.
    pub pool_id: String,
    /// Beneficiary.
    pub beneficiary_uscc: String,
    /// Caller's reference.
    pub reference: String,
    /// State.
    pub state: ReservationState,
    /// Held, fen.
    pub held_fen: i64,
    /// Committed, fen.
    pub committed_fen: i64,
    /// Returned, fen.
    pub released_fen: i64,
    /// Created, µs.
    pub created_us: i64,
    /// Expires, µs.
    pub expires_us: i64,
    /// Left HELD, µs.
    pub settled_us: Option<i64>,
    /// Release reason.
    pub release_reason: Option<String>,
    /// The commitment a revocation returned, fen; 0 unless REVOKED.
    pub revoked_fen: i64,
    /// Revoked, µs; `None` unless REVOKED.
    pub revoked_us: Option<i64>,
    /// Why it was revoked.
    pub revoke_reason: Option<String>,
}

/// Filters of a reservation listing.
#[derive(Clone, Debug, Default)]
pub struct ReservationFilter {
    /// Pool (required).
    pub pool_id: String,
    /// Beneficiary, or empty.
    pub beneficiary_uscc: String,
    /// Reference, or empty.
    pub reference: String,
    /// State, or none.
    pub state: Option<ReservationState>,
    /// Only these beneficiaries (an applicant's own enterprises), or all.
    pub beneficiaries: Option<Vec<String>>,
}

/// A beneficiary's usage of a pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Held, fen.
    pub held_fen: i64,
    /// Committed, fen.
    pub committed_fen: i64,
}

impl Usage {
    /// Held plus committed, fen.
    pub fn used_fen(&self) -> i64 {
        self.held_fen + self.committed_fen
    }
}

/// Who asked, for the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor(pub String);

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

/// A validated close command.
#[derive(Clone, Debug)]
pub struct ClosePool {
    /// Idempotency key.
    pub request_id: RequestId,
    /// Pool.
    pub pool_id: PoolId,
    /// Why.
    pub reason: String,
}

/// A validated extend command.
#[derive(Clone, Debug)]
pub struct Extend {
    /// Idempotency key.
    pub request_id: RequestId,
    /// Reservation.
    pub reservation_id: String,
    /// New lifetime from now in seconds; `None` means the pool's default.
    pub hold_seconds: Option<i64>,
}

/// A validated revoke command.
#[derive(Clone, Debug)]
pub struct Revoke {
    /// Idempotency key.
    pub request_id: RequestId,
    /// Reservation.
    pub reservation_id: String,
    /// Why.
    pub reason: String,
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
}
