-- Claims are funded in the order the application accepted them (issue 11): each claim gets
-- its pool's next acceptance number in the transaction that records it. The counter's row
-- stays locked until that transaction commits, so numbers follow the order of commits, also
-- with several replicas; a claim's reserve call waits while an earlier claim of its pool is
-- still SUBMITTED, and goes to the waitlist while an earlier one is WAITLISTED.
CREATE TABLE acceptance_counters (
    pool_id  TEXT   PRIMARY KEY,
    accepted BIGINT NOT NULL CHECK (accepted >= 0)
);

ALTER TABLE claims ADD COLUMN accept_seq BIGINT;

-- Claims recorded before: their order of submission.
UPDATE claims SET accept_seq = (
    SELECT COUNT(*) FROM claims AS earlier
    WHERE earlier.pool_id = claims.pool_id
      AND (earlier.submit_us < claims.submit_us
           OR (earlier.submit_us = claims.submit_us AND earlier.claim_id <= claims.claim_id))
);
INSERT INTO acceptance_counters (pool_id, accepted)
    SELECT pool_id, MAX(accept_seq) FROM claims GROUP BY pool_id;

CREATE UNIQUE INDEX claims_acceptance ON claims (pool_id, accept_seq);
-- The line of a pool: its claims still deciding or waiting, in acceptance order.
CREATE INDEX claims_line ON claims (pool_id, state, accept_seq);
