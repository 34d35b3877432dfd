-- no-transaction
-- Publicity (公示) of awards and objections (异议) to them (issue 16); see the PostgreSQL
-- migration of the same number for what each table and column means.
-- SQLite cannot change a CHECK constraint: claims and proposals are built again with the state
-- REVOKED allowed, their rows copied and their indexes made again. proposal_scores refers to
-- proposals, so foreign keys are switched off around the rebuild (SQLite's documented
-- procedure for a table change; the switch is a no-op inside a transaction, hence this
-- migration's own transaction), and the references are checked before the commit.
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;

CREATE TABLE claims_new (
    claim_id            TEXT PRIMARY KEY,
    state               TEXT   NOT NULL CHECK (state IN ('SUBMITTED', 'INELIGIBLE', 'WAITLISTED',
                            'PENDING_REVIEW', 'APPROVED', 'REJECTED', 'WITHDRAWN', 'EXPIRED', 'DISBURSED',
                            'NEEDS_INFORMATION', 'REVOKED')),
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

INSERT INTO claims_new (claim_id, state, enterprise_uscc, pool_id, seller_uscc, contract_number, contract_total_fen, contract, decision, evaluation_due, entitlement_fen, reserve_attempt, reserve_intent_fen, reservation_id, reserved_fen, hold_expires_us, release_due, orphan_check_due, commit_intent_fen, commit_request_id, verified_paid_fen, benefit_rating, approved_fen, reviewer_id, review_note, rejection_reason, withdrawal_reason, payment_reference, payment_date, disbursed_fen, disbursed_by, disbursed_us, step_us, step_actor, submit_us, updated_us, reviewed_us, revision, row_version, accept_seq, review_due_us, hold_set_us, extend_attempt, information_request)
SELECT claim_id, state, enterprise_uscc, pool_id, seller_uscc, contract_number, contract_total_fen, contract, decision, evaluation_due, entitlement_fen, reserve_attempt, reserve_intent_fen, reservation_id, reserved_fen, hold_expires_us, release_due, orphan_check_due, commit_intent_fen, commit_request_id, verified_paid_fen, benefit_rating, approved_fen, reviewer_id, review_note, rejection_reason, withdrawal_reason, payment_reference, payment_date, disbursed_fen, disbursed_by, disbursed_us, step_us, step_actor, submit_us, updated_us, reviewed_us, revision, row_version, accept_seq, review_due_us, hold_set_us, extend_attempt, information_request
FROM claims;

DROP TABLE claims;
ALTER TABLE claims_new RENAME TO claims;

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

CREATE TABLE proposals_new (
    proposal_id        TEXT PRIMARY KEY,
    round_id           TEXT   NOT NULL REFERENCES selection_rounds (round_id),
    state              TEXT   NOT NULL CHECK (state IN ('SUBMITTED', 'INELIGIBLE', 'ELIGIBLE', 'AWARDED',
                           'NOT_SELECTED', 'WITHDRAWN', 'DISBURSED', 'REVOKED')),
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
INSERT INTO proposals_new (proposal_id, round_id, state, applicant_uscc, category, title,
    requested_fen, summary, attachments, decision, rank, planned_award_fen, reservation_id,
    awarded_fen, withdrawal_reason, payment_reference, payment_date, disbursed_fen, disbursed_by,
    disbursed_us, step_us, submit_us, updated_us, revision, row_version)
SELECT proposal_id, round_id, state, applicant_uscc, category, title,
    requested_fen, summary, attachments, decision, rank, planned_award_fen, reservation_id,
    awarded_fen, withdrawal_reason, payment_reference, payment_date, disbursed_fen, disbursed_by,
    disbursed_us, step_us, submit_us, updated_us, revision, row_version
FROM proposals;
DROP TABLE proposals;
ALTER TABLE proposals_new RENAME TO proposals;
CREATE INDEX proposals_by_round ON proposals (round_id, submit_us, proposal_id);
CREATE INDEX proposals_by_submission ON proposals (submit_us DESC, proposal_id DESC);
CREATE INDEX proposals_unscreened ON proposals (step_us) WHERE state = 'SUBMITTED';

CREATE TABLE public_notices (
    notice_id           TEXT PRIMARY KEY,
    application_kind    TEXT   NOT NULL CHECK (application_kind IN ('CLAIM', 'PROPOSAL')),
    application_id      TEXT   NOT NULL UNIQUE,
    enterprise_uscc     TEXT   NOT NULL,
    enterprise_name     TEXT   NOT NULL,
    project_title       TEXT   NOT NULL,
    round_id            TEXT   NOT NULL,
    pool_id             TEXT   NOT NULL,
    reservation_id      TEXT   NOT NULL,
    amount_fen          BIGINT NOT NULL CHECK (amount_fen > 0),
    start_us            BIGINT NOT NULL,
    end_us              BIGINT,
    working_days        BIGINT NOT NULL DEFAULT 0 CHECK (working_days >= 0),
    calendar_covered    BIGINT NOT NULL DEFAULT 0 CHECK (calendar_covered IN (0, 1)),
    open_objections     BIGINT NOT NULL DEFAULT 0 CHECK (open_objections >= 0),
    revoked_us          BIGINT,
    revoke_due          BIGINT NOT NULL DEFAULT 0 CHECK (revoke_due IN (0, 1)),
    revoke_objection_id TEXT,
    row_version         BIGINT NOT NULL DEFAULT 0,
    CHECK (end_us IS NULL OR end_us >= start_us),
    CHECK (revoke_due = 0 OR revoked_us IS NOT NULL)
);
CREATE INDEX public_notices_newest ON public_notices (start_us DESC, notice_id DESC);
CREATE INDEX public_notices_uncounted ON public_notices (start_us) WHERE end_us IS NULL;
CREATE INDEX public_notices_revoke_due ON public_notices (revoked_us) WHERE revoke_due = 1;

CREATE TABLE objections (
    objection_id    TEXT PRIMARY KEY,
    notice_id       TEXT   NOT NULL REFERENCES public_notices (notice_id),
    grounds         TEXT   NOT NULL,
    state           TEXT   NOT NULL CHECK (state IN ('OPEN', 'UPHELD', 'DISMISSED')),
    filed_by        TEXT   NOT NULL,
    filed_us        BIGINT NOT NULL,
    reviewer_id     TEXT   NOT NULL DEFAULT '',
    decision_reason TEXT   NOT NULL DEFAULT '',
    decided_us      BIGINT,
    row_version     BIGINT NOT NULL DEFAULT 0,
    CHECK ((state = 'OPEN') = (decided_us IS NULL))
);
CREATE INDEX objections_by_filing ON objections (filed_us, objection_id);
CREATE INDEX objections_by_notice ON objections (notice_id, filed_us, objection_id);

-- Awards made before publicity existed are published now, their period to be counted from
-- now: nothing unpaid is paid without a publicity period.
INSERT INTO public_notices (notice_id, application_kind, application_id, enterprise_uscc,
    enterprise_name, project_title, round_id, pool_id, reservation_id, amount_fen, start_us)
SELECT 'notice-' || c.claim_id, 'CLAIM', c.claim_id, c.enterprise_uscc, e.name, '', '', c.pool_id,
    c.reservation_id, c.approved_fen, (CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER))
FROM claims c JOIN enterprises e ON e.uscc = c.enterprise_uscc
WHERE c.state = 'APPROVED';
INSERT INTO public_notices (notice_id, application_kind, application_id, enterprise_uscc,
    enterprise_name, project_title, round_id, pool_id, reservation_id, amount_fen, start_us)
SELECT 'notice-' || p.proposal_id, 'PROPOSAL', p.proposal_id, p.applicant_uscc, e.name, p.title,
    p.round_id, r.pool_id, p.reservation_id, p.awarded_fen,
    (CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER))
FROM proposals p JOIN enterprises e ON e.uscc = p.applicant_uscc
    JOIN selection_rounds r ON r.round_id = p.round_id
WHERE p.state = 'AWARDED';

-- Every reference still holds after the rebuild (this fails the migration, rolled back, if not).
CREATE TEMP TABLE publicity_fk_violations AS SELECT * FROM pragma_foreign_key_check;
SELECT CASE WHEN (SELECT count(*) FROM publicity_fk_violations) = 0 THEN 0
    ELSE json_extract('not json', '$') END;
DROP TABLE publicity_fk_violations;

COMMIT;
PRAGMA foreign_keys = ON;
