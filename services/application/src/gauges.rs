//! The application's gauges, read from its database for `/metrics` (see
//! `subsidy_common::metrics`): claims and proposals by state, each pool's waitlist, the
//! outbox's backlog and lag, and each program's amounts and median time to decision over all
//! its applications (the figures of `GetProgramStatistics` that are gauges; the per-period
//! ones, burn rates and projections, are not). Amounts are integer fen, as the budget's pool
//! amounts, so that nothing near money is a float; the compute-voucher multiplier is
//! `funded_contract_volume / approved` of `subsidy.application.amount`.

use subsidy_common::db::Db;
use subsidy_common::metrics::{GaugeSpec, Gauges, Reading, count_of, reading, seconds_since};

use crate::domain::state::{ClaimState, ProposalState};
use crate::domain::statistics::Program;
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
/// Each program's amounts in fen, by `program` (`compute_voucher`, `data_infrastructure`) and
/// `amount` (`requested`, `approved`, `disbursed`, `funded_contract_volume`).
pub const AMOUNT: &str = "subsidy.application.amount";
/// Each program's median time from submission to decision in seconds (rounded down), by
/// `program`; 0 while nothing is decided.
pub const DECISION_SECONDS_MEDIAN: &str = "subsidy.application.decision_seconds_median";

const SPECS: [GaugeSpec; 8] = [
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
    GaugeSpec {
        name: AMOUNT,
        description: "Amounts of each program's applications in fen (1/100 CNY), by program and amount (requested, approved, disbursed, funded_contract_volume)",
    },
    GaugeSpec {
        name: DECISION_SECONDS_MEDIAN,
        description: "Median time from submission to decision in seconds, by program",
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
    for (program, amounts, median_us) in &tallies.programs {
        let program = program.as_str();
        let amounts = [
            ("requested", amounts.requested_fen),
            ("approved", amounts.approved_fen),
            ("disbursed", amounts.disbursed_fen),
            ("funded_contract_volume", amounts.funded_contract_volume_fen),
        ];
        for (amount, fen) in amounts {
            if amount == "funded_contract_volume" && program != Program::ComputeVoucher.as_str() {
                // Proposals have no contracts.
                continue;
            }
            readings.push(reading(
                AMOUNT,
                &[("program", program), ("amount", amount)],
                fen,
            ));
        }
        let median_seconds = median_us.map_or(0, |us| us.max(0) / 1_000_000);
        readings.push(reading(
            DECISION_SECONDS_MEDIAN,
            &[("program", program)],
            median_seconds,
        ));
    }
    readings
}
