//! The application's gauges, read from its database for `/metrics` (see
//! `subsidy_common::metrics`): claims and proposals by state, each pool's waitlist, and the
//! outbox's backlog and lag.

use subsidy_common::db::Db;
use subsidy_common::metrics::{GaugeSpec, Gauges, Reading, count_of, reading, seconds_since};

use crate::domain::state::{ClaimState, ProposalState};
use crate::storage::gauges::{self, Tallies};

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
    Gauges::over_db(&SPECS, db, gauges::tallies, readings)
}

/// The readings of `tallies` at `now_us`.
fn readings(tallies: &Tallies, now_us: i64) -> Vec<Reading> {
    let mut readings = Vec::new();
    for state in ClaimState::ALL {
        let state = state.as_str();
        readings.push(reading(
            CLAIMS,
            &[("state", state)],
            count_of(&tallies.claims, state),
        ));
    }
    for state in ProposalState::ALL {
        let state = state.as_str();
        readings.push(reading(
            PROPOSALS,
            &[("state", state)],
            count_of(&tallies.proposals, state),
        ));
    }
    for (pool_id, waiting) in &tallies.waitlists {
        readings.push(reading(WAITLIST, &[("pool_id", pool_id)], *waiting));
    }
    let lag_seconds = tallies
        .outbox_oldest_us
        .map_or(0, |oldest| seconds_since(oldest, now_us));
    readings.push(reading(OUTBOX_PENDING, &[], tallies.outbox_pending));
    readings.push(reading(OUTBOX_LAG, &[], lag_seconds));
    readings.push(reading(OUTBOX_DEAD, &[], tallies.outbox_dead));
    readings
}
