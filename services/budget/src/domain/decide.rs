//! The decisions of one batch: every reserve, commit, release and expiry of one pool, decided
//! in arrival order against the pool's counters and its beneficiaries' usage as read under the
//! pool's lock.
//!
//! Deciding in memory is correct only because the caller holds the pool row's lock for the
//! whole batch (`SELECT … FOR UPDATE`, or SQLite's single writer): nobody else can change the
//! counters between the read and the write. Each operation is checked completely before it
//! changes anything, so a refused operation refuses only itself and leaves the batch as it
//! was. What the batch did is read back with [`Batch::finish`] and written in set-based
//! statements; the ledger entries come out already chained.

use std::collections::{BTreeSet, HashMap};

use super::ledger::{HASH_VERSION_CANONICAL, LedgerEntry, LedgerKind};
use super::{
    Actor, ClosePool, Commit, Extend, MICROS_PER_SECOND, Pool, Release, Reservation,
    ReservationState, Reserve, Revoke, Usage,
};

/// The actor recorded for expiries.
pub const EXPIRY_ACTOR: &str = "system:expiry";
/// The release reason recorded for expiries.
pub const EXPIRY_REASON: &str = "expired";

/// Why one operation of a batch is refused, with the ids and amounts involved (they become the
/// error's metadata). Nothing of the operation was applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The pool has less available than asked.
    #[error("the pool does not have the amount available")]
    PoolExhausted {
        /// The pool.
        pool_id: String,
        /// Asked, fen.
        requested_fen: i64,
        /// Available, fen.
        available_fen: i64,
    },
    /// The beneficiary would exceed its cumulative cap.
    #[error("the beneficiary would exceed its cap")]
    BeneficiaryCapExceeded {
        /// The pool.
        pool_id: String,
        /// The beneficiary.
        beneficiary_uscc: String,
        /// The cap, fen.
        cap_fen: i64,
        /// Held and committed already, fen.
        used_fen: i64,
        /// Asked, fen.
        requested_fen: i64,
    },
    /// The amount is above the pool's per-reservation cap.
    #[error("the amount exceeds the pool's per-reservation cap")]
    ReservationCapExceeded {
        /// The pool.
        pool_id: String,
        /// The cap, fen.
        cap_fen: i64,
        /// Asked, fen.
        requested_fen: i64,
    },
    /// The pool is closed to new holds.
    #[error("the pool is closed to new holds")]
    PoolClosed {
        /// The pool.
        pool_id: String,
    },
    /// No such reservation in this pool.
    #[error("reservation not found")]
    ReservationNotFound {
        /// The reservation asked for.
        reservation_id: String,
    },
    /// The reservation is not HELD (committed, released, expired, or past its expiry).
    #[error("the reservation is not held")]
    ReservationNotHeld {
        /// The reservation.
        reservation_id: String,
        /// Its state (`HELD` when it is past its expiry but not yet expired).
        state: &'static str,
    },
    /// The reservation is not COMMITTED (held, released, expired or revoked already).
    #[error("the reservation is not committed")]
    ReservationNotCommitted {
        /// The reservation.
        reservation_id: String,
        /// Its state.
        state: &'static str,
    },
    /// The commit amount is above the held amount.
    #[error("the commit amount exceeds the hold")]
    CommitExceedsHold {
        /// The reservation.
        reservation_id: String,
        /// Held, fen.
        held_fen: i64,
        /// Asked, fen.
        requested_fen: i64,
    },
}

/// What a batch changed, to be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Effect {
    /// The pool with its new counters.
    pub pool: Pool,
    /// The sequence of the pool's last ledger entry.
    pub ledger_sequence: i64,
    /// The hash of the pool's last ledger entry.
    pub ledger_head: String,
    /// The usage of every beneficiary whose usage changed, as it now is.
    pub usages: Vec<(String, Usage)>,
    /// Reservations made by the batch.
    pub created: Vec<Reservation>,
    /// Reservations that existed and were changed by the batch (left HELD, were extended or
    /// revoked), as they now are.
    pub settled: Vec<Reservation>,
    /// The ledger entries of the batch, in order, with their hashes.
    pub entries: Vec<(LedgerEntry, String)>,
}

/// The state of one pool while a batch is decided.
#[derive(Clone, Debug)]
pub struct Batch {
    pool: Pool,
    ledger_sequence: i64,
    ledger_head: String,
    now_us: i64,
    usages: HashMap<String, Usage>,
    reservations: HashMap<String, Reservation>,
    created: Vec<String>,
    settled: BTreeSet<String>,
    touched: BTreeSet<String>,
    entries: Vec<(LedgerEntry, String)>,
}

impl Batch {
    /// A batch over `pool` as locked, its ledger head, the database time `now_us`, and the
    /// usages and reservations the batch's operations name (missing usages count as zero).
    pub fn new(
        pool: Pool,
        ledger_sequence: i64,
        ledger_head: String,
        now_us: i64,
        usages: HashMap<String, Usage>,
        reservations: Vec<Reservation>,
    ) -> Self {
        pool.assert_invariants();
        Batch {
            pool,
            ledger_sequence,
            ledger_head,
            now_us,
            usages,
            reservations: reservations
                .into_iter()
                .map(|r| (r.reservation_id.clone(), r))
                .collect(),
            created: Vec::new(),
            settled: BTreeSet::new(),
            touched: BTreeSet::new(),
            entries: Vec::new(),
        }
    }

    /// The database time of the batch, µs.
    pub fn now_us(&self) -> i64 {
        self.now_us
    }

    /// The pool as it stands after the operations decided so far.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Holds `cmd.amount` for the beneficiary as reservation `reservation_id`, or refuses.
    pub fn reserve(
        &mut self,
        cmd: &Reserve,
        actor: &Actor,
        reservation_id: String,
    ) -> Result<Reservation, Refusal> {
        self.check_reserve(cmd)?;
        let reservation = self.new_reservation(cmd, reservation_id);
        self.record_hold(cmd, actor, &reservation);
        self.created.push(reservation.reservation_id.clone());
        self.reservations
            .insert(reservation.reservation_id.clone(), reservation.clone());
        Ok(reservation)
    }

    /// Refuses a hold of `cmd.amount` the pool cannot take, checked in this order: the pool is
    /// closed, the amount is above the per-reservation cap or the beneficiary cap, the pool has
    /// less available, the beneficiary's usage would pass its cap. Changes nothing.
    fn check_reserve(&self, cmd: &Reserve) -> Result<(), Refusal> {
        let amount = cmd.amount.fen();
        let beneficiary = cmd.beneficiary.as_str();
        let pool_id = &self.pool.pool_id;
        if self.pool.closed_us.is_some() {
            return Err(Refusal::PoolClosed {
                pool_id: pool_id.clone(),
            });
        }
        let usage = self.usages.get(beneficiary).cloned().unwrap_or_default();
        let cap_refusal = |cap_fen, used_fen| Refusal::BeneficiaryCapExceeded {
            pool_id: pool_id.clone(),
            beneficiary_uscc: beneficiary.to_owned(),
            cap_fen,
            used_fen,
            requested_fen: amount,
        };
        if let Some(cap_fen) = self.pool.reservation_cap_fen.filter(|cap| amount > *cap) {
            return Err(Refusal::ReservationCapExceeded {
                pool_id: pool_id.clone(),
                cap_fen,
                requested_fen: amount,
            });
        }
        if let Some(cap) = self.pool.beneficiary_cap_fen.filter(|cap| amount > *cap) {
            return Err(cap_refusal(cap, usage.used_fen()));
        }
        if self.pool.available_fen() < amount {
            return Err(Refusal::PoolExhausted {
                pool_id: pool_id.clone(),
                requested_fen: amount,
                available_fen: self.pool.available_fen(),
            });
        }
        if let Some(cap) = self
            .pool
            .beneficiary_cap_fen
            .filter(|cap| usage.used_fen() + amount > *cap)
        {
            return Err(cap_refusal(cap, usage.used_fen()));
        }
        Ok(())
    }

    /// The new HELD reservation of `cmd`, expiring after its hold (or the pool's default).
    fn new_reservation(&self, cmd: &Reserve, reservation_id: String) -> Reservation {
        let hold_seconds = cmd.hold_seconds.unwrap_or(self.pool.default_hold_seconds);
        Reservation {
            reservation_id,
            pool_id: self.pool.pool_id.clone(),
            beneficiary_uscc: cmd.beneficiary.as_str().to_owned(),
            reference: cmd.reference.clone(),
            state: ReservationState::Held,
            held_fen: cmd.amount.fen(),
            committed_fen: 0,
            released_fen: 0,
            created_us: self.now_us,
            expires_us: self.now_us + hold_seconds * MICROS_PER_SECOND,
            settled_us: None,
            release_reason: None,
            revoked_fen: 0,
            revoked_us: None,
            revoke_reason: None,
        }
    }

    /// Moves the pool's and the beneficiary's held counters by a new hold, and appends its
    /// `RESERVED` ledger entry.
    fn record_hold(&mut self, cmd: &Reserve, actor: &Actor, reservation: &Reservation) {
        let amount = reservation.held_fen;
        let beneficiary = cmd.beneficiary.as_str();
        let (held_before, committed) = (self.pool.held_fen, self.pool.committed_fen);
        self.pool.held_fen += amount;
        self.pool.reservation_count += 1;
        self.adjust_usage(beneficiary, amount, 0);
        self.append(LedgerEntry {
            kind: LedgerKind::Reserved.as_str().into(),
            reservation_id: reservation.reservation_id.clone(),
            beneficiary_uscc: beneficiary.to_owned(),
            actor: actor.0.clone(),
            request_id: cmd.request_id.as_str().into(),
            amount_fen: amount,
            released_fen: 0,
            held_before_fen: held_before,
            held_after_fen: self.pool.held_fen,
            committed_before_fen: committed,
            committed_after_fen: committed,
            ..self.entry_base()
        });
    }

    /// Commits `cmd.amount` of a held reservation; the rest of the hold returns to the pool.
    pub fn commit(&mut self, cmd: &Commit, actor: &Actor) -> Result<Reservation, Refusal> {
        let reservation = self.held(&cmd.reservation_id)?;
        let amount = cmd.amount.fen();
        if amount > reservation.held_fen {
            return Err(Refusal::CommitExceedsHold {
                reservation_id: reservation.reservation_id,
                held_fen: reservation.held_fen,
                requested_fen: amount,
            });
        }
        Ok(self.settle(
            reservation,
            ReservationState::Committed,
            amount,
            None,
            actor,
            cmd.request_id.as_str(),
        ))
    }

    /// Releases a held reservation; its money returns to the pool.
    pub fn release(&mut self, cmd: &Release, actor: &Actor) -> Result<Reservation, Refusal> {
        let reservation = self.held(&cmd.reservation_id)?;
        Ok(self.settle(
            reservation,
            ReservationState::Released,
            0,
            Some(cmd.reason.clone()),
            actor,
            cmd.request_id.as_str(),
        ))
    }

    /// Moves a held reservation's expiry to now plus its new lifetime (or the pool's default),
    /// with an `EXTENDED` entry. An extension never shortens a hold: when the expiry is that
    /// late already, the reservation is answered as it is and nothing is recorded.
    pub fn extend(&mut self, cmd: &Extend, actor: &Actor) -> Result<Reservation, Refusal> {
        let mut reservation = self.held(&cmd.reservation_id)?;
        let hold_seconds = cmd.hold_seconds.unwrap_or(self.pool.default_hold_seconds);
        let expires_us = self.now_us + hold_seconds * MICROS_PER_SECOND;
        if expires_us <= reservation.expires_us {
            return Ok(reservation);
        }
        reservation.expires_us = expires_us;
        let (held, committed) = (self.pool.held_fen, self.pool.committed_fen);
        self.append(LedgerEntry {
            kind: LedgerKind::Extended.as_str().into(),
            reservation_id: reservation.reservation_id.clone(),
            beneficiary_uscc: reservation.beneficiary_uscc.clone(),
            actor: actor.0.clone(),
            request_id: cmd.request_id.as_str().into(),
            held_before_fen: held,
            held_after_fen: held,
            committed_before_fen: committed,
            committed_after_fen: committed,
            expires_us: Some(expires_us),
            ..self.entry_base()
        });
        self.settled.insert(reservation.reservation_id.clone());
        self.reservations
            .insert(reservation.reservation_id.clone(), reservation.clone());
        Ok(reservation)
    }

    /// Revokes a committed reservation: its commitment returns to the pool and to the
    /// beneficiary's remaining cap, with a `REVOKED` entry of the amount.
    pub fn revoke(&mut self, cmd: &Revoke, actor: &Actor) -> Result<Reservation, Refusal> {
        let mut reservation = self
            .reservations
            .get(&cmd.reservation_id)
            .cloned()
            .ok_or_else(|| Refusal::ReservationNotFound {
                reservation_id: cmd.reservation_id.clone(),
            })?;
        assert_eq!(
            reservation.pool_id, self.pool.pool_id,
            "a reservation is decided in its own pool's batch"
        );
        if reservation.state != ReservationState::Committed {
            return Err(Refusal::ReservationNotCommitted {
                reservation_id: cmd.reservation_id.clone(),
                state: reservation.state.as_str(),
            });
        }
        let amount = reservation.committed_fen;
        reservation.state = ReservationState::Revoked;
        reservation.committed_fen = 0;
        reservation.released_fen = reservation.held_fen;
        reservation.revoked_fen = amount;
        reservation.revoked_us = Some(self.now_us);
        reservation.revoke_reason = Some(cmd.reason.clone());
        let (held, committed_before) = (self.pool.held_fen, self.pool.committed_fen);
        self.pool.committed_fen -= amount;
        self.adjust_usage(&reservation.beneficiary_uscc, 0, -amount);
        self.append(LedgerEntry {
            kind: LedgerKind::Revoked.as_str().into(),
            reservation_id: reservation.reservation_id.clone(),
            beneficiary_uscc: reservation.beneficiary_uscc.clone(),
            actor: actor.0.clone(),
            request_id: cmd.request_id.as_str().into(),
            amount_fen: amount,
            held_before_fen: held,
            held_after_fen: held,
            committed_before_fen: committed_before,
            committed_after_fen: self.pool.committed_fen,
            ..self.entry_base()
        });
        self.settled.insert(reservation.reservation_id.clone());
        self.reservations
            .insert(reservation.reservation_id.clone(), reservation.clone());
        Ok(reservation)
    }

    /// Closes the pool to new holds; holds made before may still settle.
    pub fn close(&mut self, cmd: &ClosePool, actor: &Actor) -> Result<Pool, Refusal> {
        if self.pool.closed_us.is_some() {
            return Err(Refusal::PoolClosed {
                pool_id: self.pool.pool_id.clone(),
            });
        }
        self.pool.closed_us = Some(self.now_us);
        self.pool.close_reason = Some(cmd.reason.clone());
        let (held, committed) = (self.pool.held_fen, self.pool.committed_fen);
        self.append(LedgerEntry {
            kind: LedgerKind::PoolClosed.as_str().into(),
            actor: actor.0.clone(),
            request_id: cmd.request_id.as_str().into(),
            held_before_fen: held,
            held_after_fen: held,
            committed_before_fen: committed,
            committed_after_fen: committed,
            ..self.entry_base()
        });
        Ok(self.pool.clone())
    }

    /// Expires a reservation if it is still HELD and due by the batch's time.
    pub fn expire(&mut self, reservation_id: &str) -> Option<Reservation> {
        let reservation = self.reservations.get(reservation_id)?.clone();
        if reservation.state != ReservationState::Held || reservation.expires_us > self.now_us {
            return None;
        }
        Some(self.settle(
            reservation,
            ReservationState::Expired,
            0,
            Some(EXPIRY_REASON.into()),
            &Actor(EXPIRY_ACTOR.into()),
            "",
        ))
    }

    /// Adds reservations read later in the batch (the due ones an expiry looks at).
    pub fn know(&mut self, reservations: Vec<Reservation>) {
        for reservation in reservations {
            self.reservations
                .entry(reservation.reservation_id.clone())
                .or_insert(reservation);
        }
    }

    /// Adds usages read later in the batch.
    pub fn know_usages(&mut self, usages: HashMap<String, Usage>) {
        for (who, usage) in usages {
            self.usages.entry(who).or_insert(usage);
        }
    }

    /// What the batch did.
    pub fn finish(self) -> Effect {
        self.pool.assert_invariants();
        let Batch {
            pool,
            ledger_sequence,
            ledger_head,
            usages,
            mut reservations,
            created,
            settled,
            touched,
            entries,
            ..
        } = self;
        let created_set: BTreeSet<&String> = created.iter().collect();
        let settled: Vec<Reservation> = settled
            .iter()
            .filter(|id| !created_set.contains(id))
            .filter_map(|id| reservations.get(id).cloned())
            .collect();
        let created: Vec<Reservation> = created
            .iter()
            .filter_map(|id| reservations.remove(id))
            .collect();
        let usages = touched
            .into_iter()
            .map(|who| {
                let usage = usages.get(&who).cloned().unwrap_or_default();
                assert!(
                    usage.held_fen >= 0 && usage.committed_fen >= 0,
                    "usage of {who} went negative"
                );
                if let Some(cap) = pool.beneficiary_cap_fen {
                    assert!(usage.used_fen() <= cap, "usage of {who} exceeds the cap");
                }
                (who, usage)
            })
            .collect();
        Effect {
            pool,
            ledger_sequence,
            ledger_head,
            usages,
            created,
            settled,
            entries,
        }
    }

    fn held(&self, reservation_id: &str) -> Result<Reservation, Refusal> {
        let reservation =
            self.reservations
                .get(reservation_id)
                .ok_or_else(|| Refusal::ReservationNotFound {
                    reservation_id: reservation_id.to_owned(),
                })?;
        assert_eq!(
            reservation.pool_id, self.pool.pool_id,
            "a reservation is decided in its own pool's batch"
        );
        if reservation.state != ReservationState::Held || reservation.expires_us <= self.now_us {
            return Err(Refusal::ReservationNotHeld {
                reservation_id: reservation_id.to_owned(),
                state: reservation.state.as_str(),
            });
        }
        Ok(reservation.clone())
    }

    fn settle(
        &mut self,
        mut reservation: Reservation,
        state: ReservationState,
        committed: i64,
        reason: Option<String>,
        actor: &Actor,
        request_id: &str,
    ) -> Reservation {
        let held = reservation.held_fen;
        reservation.state = state;
        reservation.committed_fen = committed;
        reservation.released_fen = held - committed;
        reservation.settled_us = Some(self.now_us);
        reservation.release_reason = reason;
        let (held_before, committed_before) = (self.pool.held_fen, self.pool.committed_fen);
        self.pool.held_fen -= held;
        self.pool.committed_fen += committed;
        self.adjust_usage(&reservation.beneficiary_uscc, -held, committed);
        let (kind, amount, released) = match state {
            ReservationState::Committed => {
                (LedgerKind::Committed, committed, reservation.released_fen)
            }
            ReservationState::Released => (LedgerKind::Released, reservation.released_fen, 0),
            ReservationState::Expired => (LedgerKind::Expired, reservation.released_fen, 0),
            ReservationState::Held => unreachable!("settling leaves HELD"),
            ReservationState::Revoked => unreachable!("revoking is not settling a hold"),
        };
        self.append(LedgerEntry {
            kind: kind.as_str().into(),
            reservation_id: reservation.reservation_id.clone(),
            beneficiary_uscc: reservation.beneficiary_uscc.clone(),
            actor: actor.0.clone(),
            request_id: request_id.into(),
            amount_fen: amount,
            released_fen: released,
            held_before_fen: held_before,
            held_after_fen: self.pool.held_fen,
            committed_before_fen: committed_before,
            committed_after_fen: self.pool.committed_fen,
            ..self.entry_base()
        });
        self.settled.insert(reservation.reservation_id.clone());
        self.reservations
            .insert(reservation.reservation_id.clone(), reservation.clone());
        reservation
    }

    fn adjust_usage(&mut self, beneficiary: &str, held: i64, committed: i64) {
        let usage = self.usages.entry(beneficiary.to_owned()).or_default();
        usage.held_fen += held;
        usage.committed_fen += committed;
        self.touched.insert(beneficiary.to_owned());
    }

    fn entry_base(&self) -> LedgerEntry {
        LedgerEntry {
            pool_id: self.pool.pool_id.clone(),
            sequence: 0,
            kind: String::new(),
            reservation_id: String::new(),
            beneficiary_uscc: String::new(),
            actor: String::new(),
            request_id: String::new(),
            amount_fen: 0,
            released_fen: 0,
            held_before_fen: 0,
            held_after_fen: 0,
            committed_before_fen: 0,
            committed_after_fen: 0,
            created_us: self.now_us,
            previous_hash: String::new(),
            hash_version: HASH_VERSION_CANONICAL,
            expires_us: None,
        }
    }

    fn append(&mut self, mut entry: LedgerEntry) {
        self.ledger_sequence += 1;
        entry.sequence = self.ledger_sequence;
        entry.previous_hash = std::mem::take(&mut self.ledger_head);
        let hash = entry.seal();
        self.ledger_head = hash.clone();
        self.entries.push((entry, hash));
        self.pool.assert_invariants();
    }
}

#[cfg(test)]
mod tests {
    use subsidy_common::{Money, RequestId};

    use super::*;
    use crate::domain::{GENESIS_HASH, PoolId};

    fn pool(total: i64, cap: Option<i64>) -> Pool {
        Pool {
            pool_id: "p".into(),
            display_name: "p".into(),
            total_fen: total,
            held_fen: 0,
            committed_fen: 0,
            beneficiary_cap_fen: cap,
            reservation_cap_fen: None,
            default_hold_seconds: 60,
            reservation_count: 0,
            created_us: 0,
            closed_us: None,
            close_reason: None,
        }
    }

    fn reserve(n: usize, who: &str, amount: i64) -> Reserve {
        Reserve {
            request_id: RequestId::parse(&format!("r{n}")).unwrap(),
            pool_id: PoolId::parse("ppp").unwrap(),
            beneficiary: subsidy_common::uscc::complete(&format!("91370100MA{who:0>7}")),
            amount: Money::from_fen(amount).unwrap(),
            reference: "x".into(),
            hold_seconds: None,
        }
    }

    fn actor() -> Actor {
        Actor("t".into())
    }

    #[test]
    fn a_refused_operation_refuses_only_itself() {
        // Proves: in one batch, an exhausting reserve is refused and changes nothing, while the
        // operations before and after it take effect, in order, with a chained ledger.
        let mut batch = Batch::new(pool(100, None), 1, "h".into(), 10, HashMap::new(), vec![]);
        batch
            .reserve(&reserve(1, "1", 60), &actor(), "a".into())
            .unwrap();
        assert!(matches!(
            batch.reserve(&reserve(2, "2", 50), &actor(), "b".into()),
            Err(Refusal::PoolExhausted {
                requested_fen: 50,
                available_fen: 40,
                ..
            })
        ));
        batch
            .reserve(&reserve(3, "3", 40), &actor(), "c".into())
            .unwrap();
        let effect = batch.finish();
        assert_eq!(effect.pool.held_fen, 100);
        assert_eq!(effect.pool.reservation_count, 2);
        assert_eq!(effect.created.len(), 2);
        assert_eq!(effect.entries.len(), 2);
        assert_eq!(effect.entries[0].0.previous_hash, "h");
        assert_eq!(effect.entries[1].0.previous_hash, effect.entries[0].1);
        assert_eq!(effect.entries[1].0.sequence, 3);
        assert_eq!(effect.ledger_head, effect.entries[1].1);
    }

    #[test]
    fn the_beneficiary_cap_counts_holds_made_earlier_in_the_same_batch() {
        let mut batch = Batch::new(
            pool(1000, Some(100)),
            0,
            GENESIS_HASH.into(),
            10,
            HashMap::new(),
            vec![],
        );
        batch
            .reserve(&reserve(1, "1", 70), &actor(), "a".into())
            .unwrap();
        assert!(matches!(
            batch.reserve(&reserve(2, "1", 40), &actor(), "b".into()),
            Err(Refusal::BeneficiaryCapExceeded {
                cap_fen: 100,
                used_fen: 70,
                ..
            })
        ));
        assert!(
            batch
                .reserve(&reserve(3, "2", 40), &actor(), "c".into())
                .is_ok()
        );
    }

    #[test]
    fn a_hold_made_in_a_batch_can_be_committed_partly_in_the_same_batch() {
        let mut batch = Batch::new(
            pool(1000, None),
            0,
            GENESIS_HASH.into(),
            10,
            HashMap::new(),
            vec![],
        );
        batch
            .reserve(&reserve(1, "1", 70), &actor(), "a".into())
            .unwrap();
        let commit = Commit {
            request_id: RequestId::parse("c1").unwrap(),
            reservation_id: "a".into(),
            amount: Money::from_fen(50).unwrap(),
        };
        let committed = batch.commit(&commit, &actor()).unwrap();
        assert_eq!((committed.committed_fen, committed.released_fen), (50, 20));
        assert!(matches!(
            batch.commit(&commit, &actor()),
            Err(Refusal::ReservationNotHeld {
                state: "COMMITTED",
                ..
            })
        ));
        let effect = batch.finish();
        assert_eq!((effect.pool.held_fen, effect.pool.committed_fen), (0, 50));
        assert_eq!(
            effect.created.len(),
            1,
            "created once, with its final state"
        );
        assert_eq!(effect.created[0].state, ReservationState::Committed);
        assert!(effect.settled.is_empty());
        assert_eq!(
            effect.usages[0].1,
            Usage {
                held_fen: 0,
                committed_fen: 50
            }
        );
    }

    #[test]
    fn a_hold_past_its_expiry_cannot_be_committed_and_expires() {
        let held = Reservation {
            reservation_id: "a".into(),
            pool_id: "p".into(),
            beneficiary_uscc: "u".into(),
            reference: "x".into(),
            state: ReservationState::Held,
            held_fen: 30,
            committed_fen: 0,
            released_fen: 0,
            created_us: 0,
            expires_us: 10,
            settled_us: None,
            release_reason: None,
            revoked_fen: 0,
            revoked_us: None,
            revoke_reason: None,
        };
        let mut locked = pool(100, None);
        locked.held_fen = 30;
        let usages = HashMap::from([(
            "u".to_owned(),
            Usage {
                held_fen: 30,
                committed_fen: 0,
            },
        )]);
        let mut batch = Batch::new(locked, 1, "h".into(), 10, usages, vec![held]);
        let commit = Commit {
            request_id: RequestId::parse("c1").unwrap(),
            reservation_id: "a".into(),
            amount: Money::from_fen(30).unwrap(),
        };
        assert!(matches!(
            batch.commit(&commit, &actor()),
            Err(Refusal::ReservationNotHeld { state: "HELD", .. })
        ));
        let expired = batch.expire("a").unwrap();
        assert_eq!(
            (expired.state, expired.released_fen),
            (ReservationState::Expired, 30)
        );
        assert!(batch.expire("a").is_none(), "expires once");
        let effect = batch.finish();
        assert_eq!(effect.pool.held_fen, 0);
        assert_eq!(effect.settled.len(), 1);
        assert_eq!(effect.entries[0].0.actor, EXPIRY_ACTOR);
    }
}
