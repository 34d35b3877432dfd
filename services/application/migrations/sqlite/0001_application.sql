-- Application schema (SQLite). Money is integer fen; times are integer microseconds since
-- the Unix epoch by the database clock. Wire messages kept verbatim (contracts, decisions,
-- rankings, events) are stored as encoded protobuf.

CREATE TABLE enterprises (
    uscc                       TEXT PRIMARY KEY,
    name                       TEXT   NOT NULL,
    contact_email              TEXT   NOT NULL,
    contact_phone              TEXT   NOT NULL,
    registration_division_code TEXT   NOT NULL,
    created_us                 BIGINT NOT NULL,
    updated_us                 BIGINT NOT NULL
);
CREATE INDEX enterprises_by_division ON enterprises (registration_division_code, uscc);

CREATE TABLE claims (
    claim_id            TEXT PRIMARY KEY,
    state               TEXT   NOT NULL CHECK (state IN ('SUBMITTED', 'INELIGIBLE', 'WAITLISTED',
                            'PENDING_REVIEW', 'APPROVED', 'REJECTED', 'WITHDRAWN', 'EXPIRED', 'DISBURSED')),
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
    CHECK (approved_fen <= reserved_fen),
    CHECK (state <> 'PENDING_REVIEW' OR (reservation_id IS NOT NULL AND reserved_fen > 0)),
    CHECK (state NOT IN ('APPROVED', 'DISBURSED') OR approved_fen > 0)
);
-- One contract is claimed once, whatever the outcome, unless the claim was withdrawn.
CREATE UNIQUE INDEX claims_one_per_contract ON claims (seller_uscc, contract_number)
    WHERE state <> 'WITHDRAWN';
CREATE INDEX claims_by_submission ON claims (submit_us DESC, claim_id DESC);
CREATE INDEX claims_by_enterprise ON claims (enterprise_uscc, submit_us DESC, claim_id DESC);
CREATE INDEX claims_waitlist ON claims (pool_id, submit_us, claim_id) WHERE state = 'WAITLISTED';
CREATE INDEX claims_pending_work ON claims (step_us)
    WHERE state IN ('SUBMITTED', 'WAITLISTED', 'PENDING_REVIEW') OR release_due = 1 OR orphan_check_due = 1;

CREATE TABLE selection_rounds (
    round_id            TEXT PRIMARY KEY,
    pool_id             TEXT   NOT NULL,
    title               TEXT   NOT NULL,
    state               TEXT   NOT NULL CHECK (state IN ('OPEN', 'CLOSED', 'FINALIZING', 'FINALIZED')),
    deadline_us         BIGINT NOT NULL,
    created_by          TEXT   NOT NULL,
    created_us          BIGINT NOT NULL,
    closed_us           BIGINT,
    finalize_started_us BIGINT,
    ranking             BLOB,
    ranking_decision_id TEXT   NOT NULL,
    finalized_us        BIGINT,
    award_count         BIGINT NOT NULL CHECK (award_count >= 0),
    awarded_total_fen   BIGINT NOT NULL CHECK (awarded_total_fen >= 0),
    row_version         BIGINT NOT NULL
);
CREATE INDEX selection_rounds_by_creation ON selection_rounds (created_us DESC, round_id DESC);

CREATE TABLE proposals (
    proposal_id        TEXT PRIMARY KEY,
    round_id           TEXT   NOT NULL REFERENCES selection_rounds (round_id),
    state              TEXT   NOT NULL CHECK (state IN ('SUBMITTED', 'INELIGIBLE', 'ELIGIBLE', 'AWARDED',
                           'NOT_SELECTED', 'WITHDRAWN', 'DISBURSED')),
    applicant_uscc     TEXT   NOT NULL REFERENCES enterprises (uscc),
    category           TEXT   NOT NULL,
    title              TEXT   NOT NULL,
    requested_fen      BIGINT NOT NULL CHECK (requested_fen > 0),
    summary            TEXT   NOT NULL,
    attachments        BLOB   NOT NULL,
    decision           BLOB,
    rank               BIGINT NOT NULL CHECK (rank >= 0),
    planned_award_fen  BIGINT NOT NULL CHECK (planned_award_fen >= 0),
    reservation_id     TEXT,
    awarded_fen        BIGINT NOT NULL CHECK (awarded_fen >= 0),
    withdrawal_reason  TEXT   NOT NULL,
    payment_reference  TEXT   NOT NULL,
    payment_date       TEXT   NOT NULL,
    disbursed_fen      BIGINT NOT NULL CHECK (disbursed_fen >= 0),
    disbursed_by       TEXT   NOT NULL,
    disbursed_us       BIGINT,
    step_us            BIGINT NOT NULL,
    submit_us          BIGINT NOT NULL,
    updated_us         BIGINT NOT NULL,
    revision           BIGINT NOT NULL CHECK (revision > 0),
    row_version        BIGINT NOT NULL,
    CHECK (awarded_fen <= requested_fen),
    CHECK (state NOT IN ('AWARDED', 'DISBURSED') OR (awarded_fen > 0 AND reservation_id IS NOT NULL))
);
CREATE INDEX proposals_by_round ON proposals (round_id, submit_us, proposal_id);
CREATE INDEX proposals_by_submission ON proposals (submit_us DESC, proposal_id DESC);
CREATE INDEX proposals_unscreened ON proposals (step_us) WHERE state = 'SUBMITTED';

CREATE TABLE proposal_scores (
    proposal_id              TEXT   NOT NULL REFERENCES proposals (proposal_id),
    expert_id                TEXT   NOT NULL,
    expert_organization_uscc TEXT   NOT NULL,
    score                    BIGINT NOT NULL CHECK (score BETWEEN 0 AND 100),
    comment                  TEXT   NOT NULL,
    scored_us                BIGINT NOT NULL,
    PRIMARY KEY (proposal_id, expert_id)
);

-- Every transition of a claim or proposal, appended in the transaction that makes it.
CREATE TABLE history (
    application_id TEXT   NOT NULL,
    sequence       BIGINT NOT NULL CHECK (sequence > 0),
    from_state     TEXT,
    to_state       TEXT   NOT NULL,
    actor          TEXT   NOT NULL,
    reason         TEXT   NOT NULL,
    request_id     TEXT   NOT NULL,
    created_us     BIGINT NOT NULL,
    PRIMARY KEY (application_id, sequence)
);

-- History is append-only: the database refuses to change or remove an entry.
CREATE TRIGGER history_no_update BEFORE UPDATE ON history
BEGIN
    SELECT RAISE(ABORT, 'history is append-only');
END;
CREATE TRIGGER history_no_delete BEFORE DELETE ON history
BEGIN
    SELECT RAISE(ABORT, 'history is append-only');
END;

-- Events for the notification service, written with the transition and relayed in order.
CREATE TABLE outbox (
    outbox_seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id      TEXT   NOT NULL UNIQUE,
    event         BLOB   NOT NULL,
    created_us    BIGINT NOT NULL,
    delivered_us  BIGINT,
    attempt_count BIGINT NOT NULL DEFAULT 0,
    last_error    TEXT   NOT NULL DEFAULT '',
    dead_lettered BIGINT NOT NULL DEFAULT 0 CHECK (dead_lettered IN (0, 1))
);
CREATE INDEX outbox_undelivered ON outbox (outbox_seq) WHERE delivered_us IS NULL;

-- Requests whose work spans several transactions and calls to other services: a retry with
-- the same request_id resumes the work on the same subject.
CREATE TABLE request_progress (
    request_id  TEXT PRIMARY KEY,
    operation   TEXT   NOT NULL,
    fingerprint TEXT   NOT NULL,
    subject_id  TEXT   NOT NULL,
    created_us  BIGINT NOT NULL
);

CREATE TABLE idempotency_keys (
    request_id  TEXT PRIMARY KEY,
    operation   TEXT   NOT NULL,
    fingerprint TEXT   NOT NULL,
    response    BLOB,
    created_us  BIGINT NOT NULL
);
