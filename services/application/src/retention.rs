//! What the application prunes beyond its idempotency records (see
//! `subsidy_common::retention`): the progress rows of requests that completed longer ago than
//! the replay window. Claims, proposals, rounds, history, the outbox and the audit trail stay.

use std::time::Duration;

use subsidy_common::retention::Rule;

/// Progress rows (`request_progress`) of completed requests (their response is stored) older
/// than `retention`; runs before the idempotency records are pruned, which it looks at.
pub fn request_progress(retention: Duration) -> Rule {
    Rule {
        name: "request progress rows",
        retention,
        statements: vec![
            "DELETE FROM request_progress WHERE request_id IN (SELECT p.request_id FROM request_progress p \
             WHERE p.created_us < $1 AND EXISTS (SELECT 1 FROM idempotency_keys k \
             WHERE k.request_id = p.request_id AND k.response IS NOT NULL) \
             ORDER BY p.created_us LIMIT $2)"
                .to_owned(),
        ],
    }
}
