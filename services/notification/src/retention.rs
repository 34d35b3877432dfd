//! What the notification service prunes beyond its idempotency records (see
//! `subsidy_common::retention`): finished deliveries (delivered, cancelled, dead-lettered) with
//! their attempts, then events once none of their deliveries is left, from the oldest event on
//! (the feed records how far, `feed_head.pruned_through_seq`, and a stream asked to resume
//! from before it answers `CURSOR_EXPIRED`). Subscriptions and the audit trail stay.

use std::time::Duration;

use subsidy_common::retention::Rule;

/// The deliveries a batch prunes (the same subquery in both statements).
const FINISHED: &str = "SELECT delivery_id FROM deliveries \
     WHERE state IN ('DELIVERED', 'CANCELLED', 'DEAD_LETTERED') AND updated_us < $1 \
     ORDER BY updated_us LIMIT $2";

/// The rules, in order: finished deliveries older than `retention` (their attempts first),
/// then the oldest events published before it that no delivery refers to any more.
pub fn rules(retention: Duration) -> Vec<Rule> {
    vec![
        Rule {
            name: "finished deliveries",
            retention,
            statements: vec![
                format!("DELETE FROM delivery_attempts WHERE delivery_id IN ({FINISHED})"),
                format!(
                    "DELETE FROM deliveries WHERE delivery_id IN ({FINISHED}) \
                     AND NOT EXISTS (SELECT 1 FROM delivery_attempts a WHERE a.delivery_id = deliveries.delivery_id)"
                ),
            ],
        },
        Rule {
            name: "events",
            retention,
            statements: vec![
                // Only a prefix of the feed: every event before the first one still needed
                // (published since the cutoff, or with a delivery left).
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events \
                 WHERE seq < COALESCE((SELECT MIN(seq) FROM events WHERE published_us >= $1), 9223372036854775807) \
                 AND seq < COALESCE((SELECT MIN(event_seq) FROM deliveries), 9223372036854775807) \
                 ORDER BY seq LIMIT $2)"
                    .to_owned(),
                // The feed's memory of how far it was pruned (the events are gone up to the
                // first one left, or up to the head when none is).
                "UPDATE feed_head SET pruned_through_seq = COALESCE((SELECT MIN(seq) - 1 FROM events), last_seq) \
                 WHERE singleton = 1"
                    .to_owned(),
            ],
        },
    ]
}
