//! Replaying a ledger without the service: entries in write order (as `subsidyctl ledger
//! export` writes them), each checked against its hash, its pool's chain and the balances the
//! entries before it left. What an auditor runs on an exported file; pure, no database.

use std::collections::{BTreeMap, HashMap};

use super::ledger::{ChainHead, LedgerEntry, LedgerKind};

/// The first thing found wrong: where and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The pool of the entry.
    pub pool_id: String,
    /// The entry's sequence in that pool.
    pub sequence: i64,
    /// What is wrong, for people.
    pub what: String,
}

/// One pool as replayed so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolState {
    /// The chain's head: last sequence and hash.
    pub head: ChainHead,
    /// The pool's total, from its `POOL_CREATED` entry.
    pub total_fen: i64,
    /// Held after the last entry.
    pub held_fen: i64,
    /// Committed after the last entry.
    pub committed_fen: i64,
    /// Entries replayed.
    pub entries: i64,
    /// Holds not settled yet, with their amounts.
    open_holds: HashMap<String, i64>,
    /// Reservations already settled.
    settled: std::collections::HashSet<String>,
    /// Committed reservations not revoked, with their committed amounts.
    commitments: HashMap<String, i64>,
    /// Revoked reservations.
    revoked: std::collections::HashSet<String>,
    /// The latest expiry an `EXTENDED` entry gave each held reservation.
    extended_until: HashMap<String, i64>,
    /// Whether a `POOL_CLOSED` entry was replayed (no hold may follow it).
    pub closed: bool,
}

/// The replay of a whole export.
#[derive(Clone, Debug, Default)]
pub struct Replay {
    pools: BTreeMap<String, PoolState>,
}

impl Replay {
    /// Checks the next entry (stored with `stored_hash`) and applies it; the first problem
    /// found is returned and nothing is applied.
    pub fn push(&mut self, entry: &LedgerEntry, stored_hash: &str) -> Result<(), Problem> {
        let problem = |what: String| Problem {
            pool_id: entry.pool_id.clone(),
            sequence: entry.sequence,
            what,
        };
        // The replay ends at the first problem, so a failed entry may leave its pool's state
        // half applied; nothing reads it afterwards.
        let pool = self.pools.entry(entry.pool_id.clone()).or_default();
        pool.head.follow(entry, stored_hash).map_err(problem)?;
        apply(pool, entry).map_err(problem)?;
        pool.entries += 1;
        Ok(())
    }

    /// Every pool replayed, by id.
    pub fn pools(&self) -> &BTreeMap<String, PoolState> {
        &self.pools
    }
}

/// Checks that `entry` continues `pool`'s balances and applies its change.
fn apply(pool: &mut PoolState, entry: &LedgerEntry) -> Result<(), String> {
    let kind = LedgerKind::parse(&entry.kind)
        .ok_or_else(|| format!("unknown entry kind {:?}", entry.kind))?;
    if (entry.sequence == 1) != (kind == LedgerKind::PoolCreated) {
        return Err("a pool's chain starts with POOL_CREATED, and only there".to_owned());
    }
    if entry.held_before_fen != pool.held_fen || entry.committed_before_fen != pool.committed_fen {
        return Err(format!(
            "held/committed before ({}/{}) differ from the previous entry's after ({}/{})",
            entry.held_before_fen, entry.committed_before_fen, pool.held_fen, pool.committed_fen
        ));
    }
    if (kind == LedgerKind::Extended) != entry.expires_us.is_some() {
        return Err("an EXTENDED entry, and only such an entry, carries an expiry".to_owned());
    }
    let reservation = entry.reservation_id.as_str();
    let (held_change, committed_change) = match kind {
        LedgerKind::PoolCreated => {
            if entry.amount_fen <= 0 {
                return Err("a pool is created with a positive total".to_owned());
            }
            pool.total_fen = entry.amount_fen;
            (0, 0)
        }
        LedgerKind::PoolClosed => {
            if pool.closed {
                return Err("the pool is closed twice".to_owned());
            }
            if entry.amount_fen != 0 || entry.released_fen != 0 {
                return Err("closing a pool moves no money".to_owned());
            }
            pool.closed = true;
            (0, 0)
        }
        LedgerKind::Reserved if pool.closed => {
            return Err("a hold after the pool was closed".to_owned());
        }
        LedgerKind::Reserved => {
            if entry.amount_fen <= 0 || entry.released_fen != 0 {
                return Err("a hold moves a positive amount and releases nothing".to_owned());
            }
            if pool.open_holds.contains_key(reservation) || pool.settled.contains(reservation) {
                return Err(format!("reservation {reservation} is held twice"));
            }
            pool.open_holds
                .insert(reservation.to_owned(), entry.amount_fen);
            (entry.amount_fen, 0)
        }
        LedgerKind::Committed | LedgerKind::Released | LedgerKind::Expired => {
            let held = pool.open_holds.remove(reservation).ok_or_else(|| {
                if pool.settled.contains(reservation) {
                    format!("reservation {reservation} is settled twice")
                } else {
                    format!("reservation {reservation} is settled but was never held")
                }
            })?;
            let committed = if kind == LedgerKind::Committed {
                entry.amount_fen
            } else {
                0
            };
            let returned = held - committed;
            let (amount, released) = if kind == LedgerKind::Committed {
                (committed, returned)
            } else {
                (returned, 0)
            };
            if committed < 0
                || returned < 0
                || entry.amount_fen != amount
                || entry.released_fen != released
            {
                return Err(format!(
                    "reservation {reservation} held {held} fen; this {} moves {} and returns {}",
                    entry.kind, entry.amount_fen, entry.released_fen
                ));
            }
            pool.settled.insert(reservation.to_owned());
            pool.extended_until.remove(reservation);
            if kind == LedgerKind::Committed {
                pool.commitments.insert(reservation.to_owned(), committed);
            }
            (-held, committed)
        }
        LedgerKind::Extended => {
            if !pool.open_holds.contains_key(reservation) {
                return Err(format!(
                    "reservation {reservation} is extended but is not held"
                ));
            }
            if entry.amount_fen != 0 || entry.released_fen != 0 {
                return Err("an extension moves no money".to_owned());
            }
            let expires_us = entry.expires_us.expect("checked above");
            let earlier = pool
                .extended_until
                .get(reservation)
                .copied()
                .unwrap_or(i64::MIN);
            if expires_us <= entry.created_us || expires_us <= earlier {
                return Err(format!(
                    "reservation {reservation} is extended to {expires_us}, not later than \
                     the entry's time or its previous extension"
                ));
            }
            pool.extended_until
                .insert(reservation.to_owned(), expires_us);
            (0, 0)
        }
        LedgerKind::Revoked => {
            let committed = pool.commitments.remove(reservation).ok_or_else(|| {
                if pool.revoked.contains(reservation) {
                    format!("reservation {reservation} is revoked twice")
                } else {
                    format!("reservation {reservation} is revoked but was never committed")
                }
            })?;
            if entry.amount_fen != committed || entry.released_fen != 0 {
                return Err(format!(
                    "reservation {reservation} committed {committed} fen; this REVOKED returns {} \
                     and releases {}",
                    entry.amount_fen, entry.released_fen
                ));
            }
            pool.revoked.insert(reservation.to_owned());
            (0, -committed)
        }
    };
    let (held, committed) = (
        pool.held_fen + held_change,
        pool.committed_fen + committed_change,
    );
    if entry.held_after_fen != held || entry.committed_after_fen != committed {
        return Err(format!(
            "held/committed after ({}/{}) are not what the change leaves ({held}/{committed})",
            entry.held_after_fen, entry.committed_after_fen
        ));
    }
    if held < 0 || committed < 0 || held + committed > pool.total_fen {
        return Err(format!(
            "held {held} and committed {committed} fen leave the bounds of the total {}",
            pool.total_fen
        ));
    }
    pool.held_fen = held;
    pool.committed_fen = committed;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ledger::{GENESIS_HASH, HASH_VERSION_CANONICAL};

    /// A small valid chain: created with 1,000.00; hold 300.00 (r1) and 200.00 (r2); commit
    /// 250.00 of r1; release r2.
    fn chain() -> Vec<(LedgerEntry, String)> {
        let steps: [(&str, &str, i64, i64); 5] = [
            ("POOL_CREATED", "", 100_000, 0),
            ("RESERVED", "r1", 30_000, 0),
            ("RESERVED", "r2", 20_000, 0),
            ("COMMITTED", "r1", 25_000, 5_000),
            ("RELEASED", "r2", 20_000, 0),
        ];
        let (mut held, mut committed) = (0, 0);
        let mut previous = GENESIS_HASH.to_owned();
        let mut out = Vec::new();
        for (i, (kind, reservation, amount, released)) in steps.into_iter().enumerate() {
            let (held_after, committed_after) = match kind {
                "RESERVED" => (held + amount, committed),
                "COMMITTED" => (held - amount - released, committed + amount),
                "RELEASED" => (held - amount, committed),
                _ => (held, committed),
            };
            let entry = LedgerEntry {
                pool_id: "p".into(),
                sequence: i as i64 + 1,
                kind: kind.into(),
                reservation_id: reservation.into(),
                beneficiary_uscc: String::new(),
                actor: "a|b".into(),
                request_id: format!("q{i}"),
                amount_fen: amount,
                released_fen: released,
                held_before_fen: held,
                held_after_fen: held_after,
                committed_before_fen: committed,
                committed_after_fen: committed_after,
                created_us: 10 + i as i64,
                previous_hash: previous.clone(),
                hash_version: HASH_VERSION_CANONICAL,
                expires_us: None,
            };
            (held, committed) = (held_after, committed_after);
            previous = entry.seal();
            out.push((entry, previous.clone()));
        }
        out
    }

    fn replay(entries: &[(LedgerEntry, String)]) -> Result<Replay, Problem> {
        let mut replay = Replay::default();
        for (entry, hash) in entries {
            replay.push(entry, hash)?;
        }
        Ok(replay)
    }

    #[test]
    fn a_valid_chain_replays_to_its_balances() {
        let replay = replay(&chain()).unwrap();
        let pool = &replay.pools()["p"];
        assert_eq!(
            (pool.held_fen, pool.committed_fen, pool.total_fen),
            (0, 25_000, 100_000)
        );
        assert_eq!(pool.entries, 5);
    }

    #[test]
    fn tampering_deleting_and_reordering_are_each_caught_and_named() {
        // A changed amount no longer matches its hash.
        let mut tampered = chain();
        tampered[3].0.amount_fen = 26_000;
        let problem = replay(&tampered).unwrap_err();
        assert_eq!(
            (problem.sequence, problem.what.contains("entry_hash")),
            (4, true)
        );
        // A deleted entry leaves a gap.
        let mut deleted = chain();
        deleted.remove(2);
        let problem = replay(&deleted).unwrap_err();
        assert_eq!(problem.sequence, 4);
        assert!(problem.what.contains("follows"), "{problem:?}");
        // Two entries swapped break the order.
        let mut swapped = chain();
        swapped.swap(1, 2);
        let problem = replay(&swapped).unwrap_err();
        assert!(problem.what.contains("follows"), "{problem:?}");
    }

    #[test]
    fn nothing_is_held_after_a_pool_is_closed() {
        // Proves the replay knows what closing means: a hold after POOL_CLOSED is refused.
        let mut entries = chain();
        let closing = LedgerEntry {
            kind: "POOL_CLOSED".into(),
            reservation_id: String::new(),
            amount_fen: 0,
            released_fen: 0,
            held_before_fen: 50_000,
            held_after_fen: 50_000,
            committed_before_fen: 0,
            committed_after_fen: 0,
            ..entries[2].0.clone()
        };
        entries.truncate(2);
        entries[1].0.held_after_fen = 30_000;
        let mut rebuilt = Vec::new();
        let mut previous = GENESIS_HASH.to_owned();
        let (mut held, mut committed) = (0, 0);
        for (mut entry, _) in entries
            .into_iter()
            .chain([(closing.clone(), String::new())])
        {
            entry.previous_hash = previous.clone();
            entry.held_before_fen = held;
            entry.committed_before_fen = committed;
            if entry.kind == "POOL_CLOSED" {
                entry.held_after_fen = held;
                entry.committed_after_fen = committed;
            }
            (held, committed) = (entry.held_after_fen, entry.committed_after_fen);
            previous = entry.seal();
            rebuilt.push((entry, previous.clone()));
        }
        assert!(replay(&rebuilt).is_ok());
        let mut late = rebuilt[1].0.clone();
        late.sequence = 4;
        late.reservation_id = "r9".into();
        late.previous_hash = previous.clone();
        late.held_before_fen = held;
        late.held_after_fen = held + late.amount_fen;
        let hash = late.seal();
        rebuilt.push((late, hash));
        let problem = replay(&rebuilt).unwrap_err();
        assert_eq!(problem.sequence, 4);
        assert!(
            problem.what.contains("after the pool was closed"),
            "{problem:?}"
        );
    }

    #[test]
    fn a_rehashed_chain_with_impossible_balances_is_caught() {
        // Proves the balances are replayed, not trusted: a chain rewritten consistently (every
        // hash recomputed) that commits more than was held is still refused.
        let mut entries = chain();
        entries[3].0.amount_fen = 31_000;
        entries[3].0.released_fen = -1_000;
        entries[3].0.held_after_fen = 20_000;
        entries[3].0.committed_after_fen = 31_000;
        let mut previous = GENESIS_HASH.to_owned();
        for (entry, hash) in &mut entries {
            entry.previous_hash = previous.clone();
            *hash = entry.seal();
            previous = hash.clone();
        }
        let problem = replay(&entries[..4]).unwrap_err();
        assert_eq!(problem.sequence, 4);
        assert!(problem.what.contains("reservation r1 held"), "{problem:?}");
    }

    /// One appended entry: kind, reservation, amount, expiry.
    type Step<'a> = (&'a str, &'a str, i64, Option<i64>);

    /// `chain()` followed by `steps` (kind, reservation, amount, expiry), each with the
    /// balances it leaves and rehashed, so only the replay's rules can refuse them.
    fn chain_with(steps: &[Step]) -> Vec<(LedgerEntry, String)> {
        let mut entries = chain();
        for (kind, reservation, amount, expires_us) in steps {
            let (last, hash) = entries.last().cloned().unwrap();
            let (held, committed) = (last.held_after_fen, last.committed_after_fen);
            let (held_after, committed_after) = match *kind {
                "RESERVED" => (held + amount, committed),
                "RELEASED" => (held - amount, committed),
                "REVOKED" => (held, committed - amount),
                _ => (held, committed),
            };
            let entry = LedgerEntry {
                sequence: last.sequence + 1,
                kind: (*kind).into(),
                reservation_id: (*reservation).into(),
                request_id: format!("q{}", last.sequence + 1),
                amount_fen: *amount,
                released_fen: 0,
                held_before_fen: held,
                held_after_fen: held_after,
                committed_before_fen: committed,
                committed_after_fen: committed_after,
                created_us: last.created_us + 1,
                previous_hash: hash,
                expires_us: *expires_us,
                ..last
            };
            let hash = entry.seal();
            entries.push((entry, hash));
        }
        entries
    }

    #[test]
    fn extensions_of_held_reservations_and_revocations_of_commitments_replay() {
        // Proves: r3 held, extended twice (later each time), released; r1's commitment of
        // 250.00 revoked: the balances come back to nothing committed.
        let entries = chain_with(&[
            ("RESERVED", "r3", 10_000, None),
            ("EXTENDED", "r3", 0, Some(1_000)),
            ("EXTENDED", "r3", 0, Some(2_000)),
            ("RELEASED", "r3", 10_000, None),
            ("REVOKED", "r1", 25_000, None),
        ]);
        let replay = replay(&entries).unwrap();
        let pool = &replay.pools()["p"];
        assert_eq!((pool.held_fen, pool.committed_fen), (0, 0));
        assert_eq!(pool.entries, 10);
    }

    #[test]
    fn inconsistent_extensions_and_revocations_are_named() {
        // Proves each rule of the new kinds is checked on a consistently rehashed chain.
        let cases: [(&[Step], &str); 7] = [
            (
                &[("EXTENDED", "r2", 0, Some(1_000))],
                "extended but is not held",
            ),
            (
                &[("EXTENDED", "r1", 0, Some(1_000))],
                "extended but is not held",
            ),
            (
                &[
                    ("RESERVED", "r3", 10_000, None),
                    ("EXTENDED", "r3", 0, Some(2_000)),
                    ("EXTENDED", "r3", 0, Some(1_500)),
                ],
                "not later",
            ),
            (
                &[
                    ("RESERVED", "r3", 10_000, None),
                    ("EXTENDED", "r3", 0, None),
                ],
                "carries an expiry",
            ),
            (&[("REVOKED", "r2", 20_000, None)], "never committed"),
            (&[("REVOKED", "r1", 26_000, None)], "committed 25000 fen"),
            (
                &[
                    ("REVOKED", "r1", 25_000, None),
                    ("REVOKED", "r1", 25_000, None),
                ],
                "revoked twice",
            ),
        ];
        for (steps, expected) in cases {
            let entries = chain_with(steps);
            let problem = replay(&entries).unwrap_err();
            assert_eq!(problem.sequence, entries.len() as i64, "{steps:?}");
            assert!(problem.what.contains(expected), "{steps:?}: {problem:?}");
        }
        // The expiry is covered by the hash of an EXTENDED entry.
        let mut entries = chain_with(&[
            ("RESERVED", "r3", 10_000, None),
            ("EXTENDED", "r3", 0, Some(2_000)),
        ]);
        entries[6].0.expires_us = Some(9_000);
        assert!(replay(&entries).unwrap_err().what.contains("entry_hash"));
    }
}
