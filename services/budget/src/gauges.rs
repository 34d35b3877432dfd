//! The budget's gauges, read from its database for `/metrics` (see
//! `subsidy_common::metrics`): each pool's amounts and its reservations by state.

use subsidy_common::db::Db;
use subsidy_common::metrics::{GaugeSpec, Gauges, Reading, count_of, reading};

use crate::storage::gauges::{self, Tallies};

/// Each pool's amounts in fen, by `amount`: `total`, `held`, `committed`, `available`.
pub const POOL_AMOUNT: &str = "subsidy.budget.pool.amount";
/// Reservations of each pool, by `state`.
pub const RESERVATIONS: &str = "subsidy.budget.reservations";

/// The states a reservation can be in (every one is reported, zero included).
const STATES: [&str; 4] = ["HELD", "COMMITTED", "RELEASED", "EXPIRED"];

const SPECS: [GaugeSpec; 2] = [
    GaugeSpec {
        name: POOL_AMOUNT,
        description: "Amounts of each pool in fen (1/100 CNY), by amount: total, held, committed, available",
    },
    GaugeSpec {
        name: RESERVATIONS,
        description: "Reservations of each pool, by state",
    },
];

/// The budget's gauges over `db`.
pub fn gauges(db: Db) -> Gauges {
    Gauges::over_db(&SPECS, db, gauges::tallies, readings)
}

/// The readings of `tallies` (the budget's gauges do not depend on the time).
fn readings(tallies: &Tallies, _now_us: i64) -> Vec<Reading> {
    let mut readings = Vec::new();
    for amounts in &tallies.pools {
        let pool = amounts.pool_id.as_str();
        for (amount, value) in [
            ("total", amounts.total_fen),
            ("held", amounts.held_fen),
            ("committed", amounts.committed_fen),
            (
                "available",
                amounts.total_fen - amounts.held_fen - amounts.committed_fen,
            ),
        ] {
            readings.push(reading(
                POOL_AMOUNT,
                &[("pool_id", pool), ("amount", amount)],
                value,
            ));
        }
        for state in STATES {
            readings.push(reading(
                RESERVATIONS,
                &[("pool_id", pool), ("state", state)],
                count_of(&tallies.reservations, &[pool, state]),
            ));
        }
    }
    readings
}
