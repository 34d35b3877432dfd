-- Publicity (公示) of awards and objections (异议) to them (issue 16).
-- * public_notices: one per award (an approved claim, an awarded proposal), written in the
--   transaction that makes the award, with the public facts only (enterprise, program, amount,
--   project title). end_us is NULL until the rules service has counted the period in working
--   days; an award is paid only once end_us has passed and open_objections is 0.
-- * revoked_us / revoke_due / revoke_objection_id: an upheld objection revoked the award;
--   revoke_due stays 1 until the budget's RevokeCommitment has returned the money (the
--   reconciler finishes it when the budget could not be reached at once).
-- * objections: filed by anyone authenticated during the period; OPEN until a reviewer upholds
--   or dismisses it.
-- * REVOKED: the claim's or proposal's state once an objection to its award was upheld.
ALTER TABLE claims DROP CONSTRAINT claims_state_check;
ALTER TABLE claims ADD CONSTRAINT claims_state_check CHECK (state IN ('SUBMITTED', 'INELIGIBLE',
    'WAITLISTED', 'PENDING_REVIEW', 'APPROVED', 'REJECTED', 'WITHDRAWN', 'EXPIRED', 'DISBURSED',
    'NEEDS_INFORMATION', 'REVOKED'));
ALTER TABLE proposals DROP CONSTRAINT proposals_state_check;
ALTER TABLE proposals ADD CONSTRAINT proposals_state_check CHECK (state IN ('SUBMITTED',
    'INELIGIBLE', 'ELIGIBLE', 'AWARDED', 'NOT_SELECTED', 'WITHDRAWN', 'DISBURSED', 'REVOKED'));

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
    c.reservation_id, c.approved_fen, (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::BIGINT
FROM claims c JOIN enterprises e ON e.uscc = c.enterprise_uscc
WHERE c.state = 'APPROVED';
INSERT INTO public_notices (notice_id, application_kind, application_id, enterprise_uscc,
    enterprise_name, project_title, round_id, pool_id, reservation_id, amount_fen, start_us)
SELECT 'notice-' || p.proposal_id, 'PROPOSAL', p.proposal_id, p.applicant_uscc, e.name, p.title,
    p.round_id, r.pool_id, p.reservation_id, p.awarded_fen,
    (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::BIGINT
FROM proposals p JOIN enterprises e ON e.uscc = p.applicant_uscc
    JOIN selection_rounds r ON r.round_id = p.round_id
WHERE p.state = 'AWARDED';
