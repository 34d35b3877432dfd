//! The application's gauges, read from its database for `/metrics` (see
//! `subsidy_common::metrics`): claims and proposals by state, each pool's waitlist, and the
//! outbox's backlog and lag.

use std::sync::Arc;

use subsidy_common::db::{Db, DbError};
use subsidy_common::metrics::{GaugeSpec, Gauges, Reading, reading};

use crate::domain::state::{ClaimState, ProposalState};

/// Claims by `state`.
pub const CLAIMS: &str = "subsidy.application.claims";
/// Proposals by `state`.
pub const PROPOSALS: &str = "subsidy.application.proposals";
/// Claims waiting for money, by `pool_id`.
pub const WAITLIST: &str = "subsidy.application.waitlist";
/// Events not yet handed to the notification service (dead-lettered ones excluded).
pub const OUTBOX_PENDING: &str = "subsidy.application.outbox.pending";
/// Age in seconds of the oldest event not yet handed on (0 when none waits).
pub const OUTBOX_LAG: &str = "subsidy.application.outbox.lag_seconds";
/// Events the relay gave up on.
pub const OUTBOX_DEAD: &str = "subsidy.application.outbox.dead_lettered";

const SPECS: [GaugeSpec; 6] = [
    GaugeSpec {
        name: CLAIMS,
        description: "Compute-voucher claims, by state",
    },
    GaugeSpec {
        name: PROPOSALS,
        description: "Data-infrastructure proposals, by state",
    },
    GaugeSpec {
        name: WAITLIST,
        description: "Claims waiting for money, by pool",
    },
    GaugeSpec {
        name: OUTBOX_PENDING,
        description: "Events not yet handed to the notification service",
    },
    GaugeSpec {
        name: OUTBOX_LAG,
        description: "Age in seconds of the oldest event not yet handed to the notification service",
    },
    GaugeSpec {
        name: OUTBOX_DEAD,
        description: "Events the outbox relay gave up on",
    },
];

/// The application's gauges over `db`.
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
    let claims: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, CAST(COUNT(*) AS BIGINT) FROM claims GROUP BY state")
            .fetch_all(&db.pool)
            .await?;
    let proposals: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, CAST(COUNT(*) AS BIGINT) FROM proposals GROUP BY state")
            .fetch_all(&db.pool)
            .await?;
    let waitlists: Vec<(String, i64)> = sqlx::query_as(
        "SELECT pool_id, CAST(COUNT(*) AS BIGINT) FROM claims WHERE state = 'WAITLISTED' GROUP BY pool_id",
    )
    .fetch_all(&db.pool)
    .await?;
    let (pending, oldest_us, dead): (i64, Option<i64>, i64) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(CASE WHEN dead_lettered = 0 THEN 1 ELSE 0 END), 0) AS BIGINT), \
                MIN(CASE WHEN dead_lettered = 0 THEN created_us END), \
                CAST(COALESCE(SUM(dead_lettered), 0) AS BIGINT) \
         FROM outbox WHERE delivered_us IS NULL",
    )
    .fetch_one(&db.pool)
    .await?;
    let count = |rows: &[(String, i64)], state: &str| {
        rows.iter()
            .find(|(s, _)| s == state)
            .map_or(0, |(_, count)| *count)
    };
    let mut readings = Vec::new();
    for state in ClaimState::ALL {
        let state = state.as_str();
        readings.push(reading(CLAIMS, &[("state", state)], count(&claims, state)));
    }
    for state in ProposalState::ALL {
        let state = state.as_str();
        readings.push(reading(
            PROPOSALS,
            &[("state", state)],
            count(&proposals, state),
        ));
    }
    for (pool_id, waiting) in &waitlists {
        readings.push(reading(WAITLIST, &[("pool_id", pool_id)], *waiting));
    }
    let now_us = chrono::Utc::now().timestamp_micros();
    let lag_seconds = oldest_us.map_or(0, |oldest| (now_us - oldest).max(0) / 1_000_000);
    readings.push(reading(OUTBOX_PENDING, &[], pending));
    readings.push(reading(OUTBOX_LAG, &[], lag_seconds));
    readings.push(reading(OUTBOX_DEAD, &[], dead));
    Ok(readings)
}
