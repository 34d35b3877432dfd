-- A new claim is recorded without its acceptance number (issue 12): the transaction that
-- records it no longer holds the pool's counter until it commits, which numbered claims one
-- commit (one fsync) at a time. A numbering round locks the counter, reads every committed
-- claim of the pool still without a number, in order of submission, and numbers them all in
-- one transaction; a claim is funded only once numbered, so the numbers still follow the
-- order in which claims became visible, without gaps, also with several replicas.
CREATE INDEX claims_unnumbered ON claims (pool_id, submit_us, claim_id) WHERE accept_seq IS NULL;
