//! The notification service's gauges, read from its database for `/metrics` (see
//! `subsidy_common::metrics`): deliveries by state and channel, subscriptions by state, and
//! how long each failing endpoint has been failing.

use std::sync::Arc;

use subsidy_common::db::{Db, DbError};
use subsidy_common::metrics::{GaugeSpec, Gauges, Reading, reading};

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
    Gauges::new(
        &SPECS,
        Arc::new(move || {
            let db = db.clone();
            Box::pin(async move { read(&db).await })
        }),
    )
}

async fn read(db: &Db) -> Result<Vec<Reading>, DbError> {
    let deliveries: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT channel, state, CAST(COUNT(*) AS BIGINT) FROM deliveries GROUP BY channel, state",
    )
    .fetch_all(&db.pool)
    .await?;
    let subscriptions: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, CAST(COUNT(*) AS BIGINT) FROM subscriptions GROUP BY state")
            .fetch_all(&db.pool)
            .await?;
    let failing: Vec<(String, i64)> = sqlx::query_as(
        "SELECT subscription_id, failing_since_us FROM subscriptions \
         WHERE state = 'ACTIVE' AND failing_since_us IS NOT NULL",
    )
    .fetch_all(&db.pool)
    .await?;
    let mut readings = Vec::new();
    for channel in CHANNELS {
        for state in DELIVERY_STATES {
            let count = deliveries
                .iter()
                .find(|(c, s, _)| c == channel && s == state)
                .map_or(0, |(_, _, count)| *count);
            readings.push(reading(
                DELIVERIES,
                &[("channel", channel), ("state", state)],
                count,
            ));
        }
    }
    for state in SUBSCRIPTION_STATES {
        let count = subscriptions
            .iter()
            .find(|(s, _)| s == state)
            .map_or(0, |(_, count)| *count);
        readings.push(reading(SUBSCRIPTIONS, &[("state", state)], count));
    }
    let now_us = chrono::Utc::now().timestamp_micros();
    for (subscription_id, since_us) in &failing {
        readings.push(reading(
            FAILING,
            &[("subscription_id", subscription_id)],
            (now_us - since_us).max(0) / 1_000_000,
        ));
    }
    Ok(readings)
}
