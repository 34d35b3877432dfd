//! What the notification service's gauges (`crate::gauges`) read, over the pool.

use subsidy_common::db::Db;

/// The counts behind the notification service's gauges.
#[derive(Clone, Debug, Default)]
pub struct Tallies {
    /// Deliveries by `[channel, state]`.
    pub deliveries: Vec<([String; 2], i64)>,
    /// Subscriptions by state.
    pub subscriptions: Vec<(String, i64)>,
    /// Each active subscription whose endpoint is failing, with when it began to fail
    /// (microseconds since the epoch).
    pub failing: Vec<(String, i64)>,
}

/// Reads the counts behind the gauges from `db`'s pool.
pub async fn tallies(db: Db) -> Result<Tallies, sqlx::Error> {
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
    Ok(Tallies {
        deliveries: deliveries
            .into_iter()
            .map(|(channel, state, count)| ([channel, state], count))
            .collect(),
        subscriptions,
        failing,
    })
}
