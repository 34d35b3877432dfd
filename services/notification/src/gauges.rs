//! The notification service's gauges, read from its database for `/metrics` (see
//! `subsidy_common::metrics`): deliveries by state and channel, subscriptions by state, and
//! how long each failing endpoint has been failing.

use subsidy_common::db::Db;
use subsidy_common::metrics::{GaugeSpec, Gauges, Reading, count_of, reading, seconds_since};

use crate::storage::gauges::{self, Tallies};

/// Deliveries by `channel` and `state`.
pub const DELIVERIES: &str = "subsidy.notification.deliveries";
/// Subscriptions by `state`.
pub const SUBSCRIPTIONS: &str = "subsidy.notification.subscriptions";
/// Seconds each failing endpoint has failed every attempt, by `subscription_id`.
pub const FAILING: &str = "subsidy.notification.endpoint.failing_seconds";

/// The states of a delivery (every one is reported, zero included).
const DELIVERY_STATES: [&str; 6] = [
    "PENDING",
    "IN_FLIGHT",
    "DELIVERED",
    "FAILED_RETRYING",
    "DEAD_LETTERED",
    "CANCELLED",
];
/// The channels of a delivery.
const CHANNELS: [&str; 2] = ["WEBHOOK", "EMAIL"];
/// The states of a subscription.
const SUBSCRIPTION_STATES: [&str; 2] = ["ACTIVE", "DISABLED"];

const SPECS: [GaugeSpec; 3] = [
    GaugeSpec {
        name: DELIVERIES,
        description: "Deliveries, by channel and state (FAILED_RETRYING: waiting for a retry)",
    },
    GaugeSpec {
        name: SUBSCRIPTIONS,
        description: "Webhook subscriptions, by state",
    },
    GaugeSpec {
        name: FAILING,
        description: "Seconds an endpoint has failed every attempt, by subscription",
    },
];

/// The notification service's gauges over `db`.
pub fn gauges(db: Db) -> Gauges {
    Gauges::over_db(&SPECS, db, gauges::tallies, readings)
}

/// The readings of `tallies` at `now_us`.
fn readings(tallies: &Tallies, now_us: i64) -> Vec<Reading> {
    let mut readings = Vec::new();
    for channel in CHANNELS {
        for state in DELIVERY_STATES {
            readings.push(reading(
                DELIVERIES,
                &[("channel", channel), ("state", state)],
                count_of(&tallies.deliveries, &[channel, state]),
            ));
        }
    }
    for state in SUBSCRIPTION_STATES {
        readings.push(reading(
            SUBSCRIPTIONS,
            &[("state", state)],
            count_of(&tallies.subscriptions, state),
        ));
    }
    for (subscription_id, since_us) in &tallies.failing {
        readings.push(reading(
            FAILING,
            &[("subscription_id", subscription_id)],
            seconds_since(*since_us, now_us),
        ));
    }
    readings
}
