-- Review that cannot silently lose a subsidy (issue 16).
-- * NEEDS_INFORMATION: a reviewer asked the applicant for more; the hold is kept.
-- * review_due_us: the review deadline, when the money was held plus the review period.
-- * hold_set_us: when the hold's expiry (hold_expires_us, by the budget's clock) was last set
--   (held or extended), by this database's clock; with it the extender knows the hold's
--   lifetime and never extends before two thirds of it have passed.
-- * extend_attempt: the number of the next extension, part of its derived request id
--   (`extend-<attempt>`), so that replicas extending the same hold at once make one call.
-- * information_request: the reviewer's latest request for information.
-- SQLite cannot change a CHECK constraint: the table is built again with the new state and
-- columns, its rows copied, and its indexes made again (nothing references claims).
CREATE TABLE claims_new (
    claim_id            TEXT PRIMARY KEY,
    state               TEXT   NOT NULL CHECK (state IN ('SUBMITTED', 'INELIGIBLE', 'WAITLISTED',
                            'PENDING_REVIEW', 'APPROVED', 'REJECTED', 'WITHDRAWN', 'EXPIRED', 'DISBURSED',
                            'NEEDS_INFORMATION')),
    enterprise_uscc     TEXT   NOT NULL REFERENCES enterprises (uscc),
    pool_id             TEXT   NOT NULL,
    seller_uscc         TEXT   NOT NULL,
    contract_number     TEXT   NOT NULL,
    contract_total_fen  BIGINT NOT NULL CHECK (contract_total_fen > 0),
    contract            BLOB   NOT NULL,
    decision            BLOB,
    evaluation_due      BIGINT NOT NULL CHECK (evaluation_due IN (0, 1)),
    entitlement_fen     BIGINT NOT NULL CHECK (entitlement_fen >= 0),
    reserve_attempt     BIGINT NOT NULL CHECK (reserve_attempt >= 0),
    reserve_intent_fen  BIGINT CHECK (reserve_intent_fen > 0),
    reservation_id      TEXT,
    reserved_fen        BIGINT NOT NULL CHECK (reserved_fen >= 0),
    hold_expires_us     BIGINT,
    release_due         BIGINT NOT NULL CHECK (release_due IN (0, 1)),
    orphan_check_due    BIGINT NOT NULL CHECK (orphan_check_due IN (0, 1)),
    commit_intent_fen   BIGINT CHECK (commit_intent_fen > 0),
    commit_request_id   TEXT,
    verified_paid_fen   BIGINT,
    benefit_rating      TEXT   NOT NULL,
    approved_fen        BIGINT NOT NULL CHECK (approved_fen >= 0),
    reviewer_id         TEXT   NOT NULL,
    review_note         TEXT   NOT NULL,
    rejection_reason    TEXT   NOT NULL,
    withdrawal_reason   TEXT   NOT NULL,
    payment_reference   TEXT   NOT NULL,
    payment_date        TEXT   NOT NULL,
    disbursed_fen       BIGINT NOT NULL CHECK (disbursed_fen >= 0),
    disbursed_by        TEXT   NOT NULL,
    disbursed_us        BIGINT,
    step_us             BIGINT NOT NULL,
    step_actor          TEXT   NOT NULL,
    submit_us           BIGINT NOT NULL,
    updated_us          BIGINT NOT NULL,
    reviewed_us         BIGINT,
    revision            BIGINT NOT NULL CHECK (revision > 0),
    row_version         BIGINT NOT NULL,
    accept_seq          BIGINT,
    review_due_us       BIGINT,
    hold_set_us         BIGINT,
    extend_attempt      BIGINT NOT NULL DEFAULT 0 CHECK (extend_attempt >= 0),
    information_request TEXT   NOT NULL DEFAULT '',
    CHECK (approved_fen <= reserved_fen),
    CHECK (state <> 'PENDING_REVIEW' OR (reservation_id IS NOT NULL AND reserved_fen > 0)),
    CHECK (state <> 'NEEDS_INFORMATION' OR (reservation_id IS NOT NULL AND reserved_fen > 0)),
    CHECK (state NOT IN ('APPROVED', 'DISBURSED') OR approved_fen > 0)
);

INSERT INTO claims_new (claim_id, state, enterprise_uscc, pool_id, seller_uscc, contract_number, contract_total_fen,
    contract, decision, evaluation_due, entitlement_fen, reserve_attempt, reserve_intent_fen,
    reservation_id, reserved_fen, hold_expires_us, release_due, orphan_check_due, commit_intent_fen,
    commit_request_id, verified_paid_fen, benefit_rating, approved_fen, reviewer_id, review_note,
    rejection_reason, withdrawal_reason, payment_reference, payment_date, disbursed_fen, disbursed_by,
    disbursed_us, step_us, step_actor, submit_us, updated_us, reviewed_us, revision, row_version,
    accept_seq)
SELECT claim_id, state, enterprise_uscc, pool_id, seller_uscc, contract_number, contract_total_fen,
    contract, decision, evaluation_due, entitlement_fen, reserve_attempt, reserve_intent_fen,
    reservation_id, reserved_fen, hold_expires_us, release_due, orphan_check_due, commit_intent_fen,
    commit_request_id, verified_paid_fen, benefit_rating, approved_fen, reviewer_id, review_note,
    rejection_reason, withdrawal_reason, payment_reference, payment_date, disbursed_fen, disbursed_by,
    disbursed_us, step_us, step_actor, submit_us, updated_us, reviewed_us, revision, row_version,
    accept_seq
FROM claims;

DROP TABLE claims;
ALTER TABLE claims_new RENAME TO claims;

-- Claims held before: their deadline counts from their last change, the best record of when
-- they were held, with the default review period of 60 days.
UPDATE claims SET review_due_us = updated_us + 60 * 86400000000, hold_set_us = updated_us
    WHERE state = 'PENDING_REVIEW';

-- One contract is claimed once, whatever the outcome, unless the claim was withdrawn.
CREATE UNIQUE INDEX claims_one_per_contract ON claims (seller_uscc, contract_number)
    WHERE state <> 'WITHDRAWN';
CREATE INDEX claims_by_submission ON claims (submit_us DESC, claim_id DESC);
CREATE INDEX claims_by_enterprise ON claims (enterprise_uscc, submit_us DESC, claim_id DESC);
CREATE INDEX claims_waitlist ON claims (pool_id, submit_us, claim_id) WHERE state = 'WAITLISTED';
CREATE INDEX claims_pending_work ON claims (step_us)
    WHERE state IN ('SUBMITTED', 'WAITLISTED', 'PENDING_REVIEW') OR release_due = 1 OR orphan_check_due = 1;
CREATE UNIQUE INDEX claims_acceptance ON claims (pool_id, accept_seq);
-- The line of a pool: its claims still deciding or waiting, in acceptance order.
CREATE INDEX claims_line ON claims (pool_id, state, accept_seq);
-- The holds the extender and the expiry check look at.
CREATE INDEX claims_in_review ON claims (hold_expires_us)
    WHERE state IN ('PENDING_REVIEW', 'NEEDS_INFORMATION');
