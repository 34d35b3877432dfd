-- Review that cannot silently lose a subsidy (issue 16).
-- * NEEDS_INFORMATION: a reviewer asked the applicant for more; the hold is kept.
-- * review_due_us: the review deadline, when the money was held plus the review period.
-- * hold_set_us: when the hold's expiry (hold_expires_us, by the budget's clock) was last set
--   (held or extended), by this database's clock; with it the extender knows the hold's
--   lifetime and never extends before two thirds of it have passed.
-- * extend_attempt: the number of the next extension, part of its derived request id
--   (`extend-<attempt>`), so that replicas extending the same hold at once make one call.
-- * information_request: the reviewer's latest request for information.
ALTER TABLE claims DROP CONSTRAINT claims_state_check;
ALTER TABLE claims ADD CONSTRAINT claims_state_check CHECK (state IN ('SUBMITTED', 'INELIGIBLE',
    'WAITLISTED', 'PENDING_REVIEW', 'APPROVED', 'REJECTED', 'WITHDRAWN', 'EXPIRED', 'DISBURSED',
    'NEEDS_INFORMATION'));
ALTER TABLE claims ADD CONSTRAINT claims_needs_information_held
    CHECK (state <> 'NEEDS_INFORMATION' OR (reservation_id IS NOT NULL AND reserved_fen > 0));
ALTER TABLE claims ADD COLUMN review_due_us BIGINT;
ALTER TABLE claims ADD COLUMN hold_set_us BIGINT;
ALTER TABLE claims ADD COLUMN extend_attempt BIGINT NOT NULL DEFAULT 0 CHECK (extend_attempt >= 0);
ALTER TABLE claims ADD COLUMN information_request TEXT NOT NULL DEFAULT '';

-- Claims held before: their deadline counts from their last change, the best record of when
-- they were held, with the default review period of 60 days.
UPDATE claims SET review_due_us = updated_us + 60 * 86400000000, hold_set_us = updated_us
    WHERE state = 'PENDING_REVIEW';

-- The holds the extender and the expiry check look at.
CREATE INDEX claims_in_review ON claims (hold_expires_us)
    WHERE state IN ('PENDING_REVIEW', 'NEEDS_INFORMATION');
