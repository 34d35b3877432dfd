//! The budget's values on the wire.

use subsidy_common::edge::{money, timestamp};
use subsidy_proto::budget as pb;

use crate::domain::checkpoint::Algorithm;
use crate::domain::{LedgerKind, Pool, Reservation, ReservationState, Usage};
use crate::storage::checkpoints::StoredCheckpoint;
use crate::storage::ledger::StoredEntry;

/// The wire form of a pool.
pub fn pool(pool: &Pool) -> pb::Pool {
    pb::Pool {
        pool_id: pool.pool_id.clone(),
        display_name: pool.display_name.clone(),
        total: money(pool.total_fen),
        held: money(pool.held_fen),
        committed: money(pool.committed_fen),
        available: money(pool.available_fen()),
        beneficiary_cap: pool.beneficiary_cap_fen.and_then(money),
        reservation_cap: pool.reservation_cap_fen.and_then(money),
        default_hold_seconds: pool.default_hold_seconds,
        create_time: Some(timestamp(pool.created_us)),
        reservation_count: pool.reservation_count,
        state: if pool.closed_us.is_some() {
            pb::PoolState::Closed
        } else {
            pb::PoolState::Open
        } as i32,
        close_time: pool.closed_us.map(timestamp),
        close_reason: pool.close_reason.clone().unwrap_or_default(),
    }
}

/// The wire form of a reservation state.
pub fn state(state: ReservationState) -> pb::ReservationState {
    match state {
        ReservationState::Held => pb::ReservationState::Held,
        ReservationState::Committed => pb::ReservationState::Committed,
        ReservationState::Released => pb::ReservationState::Released,
        ReservationState::Expired => pb::ReservationState::Expired,
        ReservationState::Revoked => pb::ReservationState::Revoked,
    }
}

/// A reservation state from the wire; `None` for the unspecified value.
pub fn state_from(state: pb::ReservationState) -> Option<ReservationState> {
    match state {
        pb::ReservationState::Unspecified => None,
        pb::ReservationState::Held => Some(ReservationState::Held),
        pb::ReservationState::Committed => Some(ReservationState::Committed),
        pb::ReservationState::Released => Some(ReservationState::Released),
        pb::ReservationState::Expired => Some(ReservationState::Expired),
        pb::ReservationState::Revoked => Some(ReservationState::Revoked),
    }
}

/// The wire form of a reservation.
pub fn reservation(row: &Reservation) -> pb::Reservation {
    pb::Reservation {
        reservation_id: row.reservation_id.clone(),
        pool_id: row.pool_id.clone(),
        beneficiary_uscc: row.beneficiary_uscc.clone(),
        reference: row.reference.clone(),
        state: state(row.state) as i32,
        held_amount: money(row.held_fen),
        committed_amount: money(row.committed_fen),
        released_amount: money(row.released_fen),
        create_time: Some(timestamp(row.created_us)),
        expire_time: Some(timestamp(row.expires_us)),
        settle_time: row.settled_us.map(timestamp),
        release_reason: row.release_reason.clone().unwrap_or_default(),
        revoked_amount: money(row.revoked_fen),
        revoke_time: row.revoked_us.map(timestamp),
        revoke_reason: row.revoke_reason.clone().unwrap_or_default(),
    }
}

/// The wire form of a beneficiary's usage against the pool's cap.
pub fn usage(
    pool_id: &str,
    uscc: &str,
    usage: &Usage,
    cap_fen: Option<i64>,
) -> pb::BeneficiaryUsage {
    pb::BeneficiaryUsage {
        pool_id: pool_id.to_owned(),
        beneficiary_uscc: uscc.to_owned(),
        held: money(usage.held_fen),
        committed: money(usage.committed_fen),
        cap: cap_fen.and_then(money),
        remaining: cap_fen.and_then(|cap| money((cap - usage.used_fen()).max(0))),
    }
}

/// The wire form of a ledger entry.
pub fn ledger_entry(stored: &StoredEntry) -> pb::LedgerEntry {
    let entry = &stored.entry;
    let kind = match LedgerKind::parse(&entry.kind) {
        Some(LedgerKind::PoolCreated) => pb::LedgerEntryKind::PoolCreated,
        Some(LedgerKind::Reserved) => pb::LedgerEntryKind::Reserved,
        Some(LedgerKind::Committed) => pb::LedgerEntryKind::Committed,
        Some(LedgerKind::Released) => pb::LedgerEntryKind::Released,
        Some(LedgerKind::Expired) => pb::LedgerEntryKind::Expired,
        Some(LedgerKind::PoolClosed) => pb::LedgerEntryKind::PoolClosed,
        Some(LedgerKind::Extended) => pb::LedgerEntryKind::Extended,
        Some(LedgerKind::Revoked) => pb::LedgerEntryKind::Revoked,
        None => pb::LedgerEntryKind::Unspecified,
    };
    pb::LedgerEntry {
        sequence: entry.sequence,
        kind: kind as i32,
        pool_id: entry.pool_id.clone(),
        reservation_id: entry.reservation_id.clone(),
        beneficiary_uscc: entry.beneficiary_uscc.clone(),
        actor: entry.actor.clone(),
        request_id: entry.request_id.clone(),
        amount: money(entry.amount_fen),
        released_amount: money(entry.released_fen),
        held_before: money(entry.held_before_fen),
        held_after: money(entry.held_after_fen),
        committed_before: money(entry.committed_before_fen),
        committed_after: money(entry.committed_after_fen),
        create_time: Some(timestamp(entry.created_us)),
        previous_hash: entry.previous_hash.clone(),
        entry_hash: stored.entry_hash.clone(),
        hash_version: u32::try_from(entry.hash_version).unwrap_or_default(),
        expire_time: entry.expires_us.map(timestamp),
    }
}

/// The wire form of a checkpoint algorithm.
pub fn algorithm(algorithm: Algorithm) -> pb::CheckpointAlgorithm {
    match algorithm {
        Algorithm::Ed25519 => pb::CheckpointAlgorithm::Ed25519,
        Algorithm::Sm2Sm3 => pb::CheckpointAlgorithm::Sm2Sm3,
    }
}

/// The wire form of a signed checkpoint.
pub fn checkpoint(stored: &StoredCheckpoint) -> pb::LedgerCheckpoint {
    let checkpoint = &stored.checkpoint;
    let head = &checkpoint.head;
    pb::LedgerCheckpoint {
        pool_id: head.pool_id.clone(),
        sequence: head.sequence,
        head_hash: head.head_hash.clone(),
        total: money(head.total_fen),
        held: money(head.held_fen),
        committed: money(head.committed_fen),
        create_time: Some(timestamp(head.created_us)),
        algorithm: algorithm(checkpoint.algorithm) as i32,
        key_id: checkpoint.key_id.clone(),
        signature: checkpoint.signature.clone(),
    }
}
