//! The budget's gauges, read from its database for `/metrics` (see
//! `subsidy_common::metrics`): each pool's amounts and its reservations by state.

use std::sync::Arc;

use subsidy_common::db::{Db, DbError};
use subsidy_common::metrics::{GaugeSpec, Gauges, Reading, reading};

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
    Gauges::new(
        &SPECS,
        Arc::new(move || {
            let db = db.clone();
            Box::pin(async move { read(&db).await })
        }),
    )
}

async fn read(db: &Db) -> Result<Vec<Reading>, DbError> {
    let pools: Vec<(String, i64, i64, i64)> =
        sqlx::query_as("SELECT pool_id, total_fen, held_fen, committed_fen FROM pools")
            .fetch_all(&db.pool)
            .await?;
    let counts: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT pool_id, state, CAST(COUNT(*) AS BIGINT) FROM reservations GROUP BY pool_id, state",
    )
    .fetch_all(&db.pool)
    .await?;
    let mut readings = Vec::new();
    for (pool_id, total, held, committed) in &pools {
        let pool = pool_id.as_str();
        for (amount, value) in [
            ("total", *total),
            ("held", *held),
            ("committed", *committed),
            ("available", total - held - committed),
        ] {
            readings.push(reading(
                POOL_AMOUNT,
                &[("pool_id", pool), ("amount", amount)],
                value,
            ));
        }
        for state in STATES {
            let count = counts
                .iter()
                .find(|(p, s, _)| p == pool_id && s == state)
                .map_or(0, |(_, _, count)| *count);
            readings.push(reading(
                RESERVATIONS,
                &[("pool_id", pool), ("state", state)],
                count,
            ));
        }
    }
    Ok(readings)
}
