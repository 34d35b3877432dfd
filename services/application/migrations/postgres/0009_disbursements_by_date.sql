-- The disbursement export reads the paid claims and awards of a period in order of payment
-- date and id, a page at a time after the last row read: these indexes serve each page without
-- reading the payments before it or any unpaid application.
CREATE INDEX claims_paid_by_date ON claims (payment_date, claim_id) WHERE state = 'DISBURSED';
CREATE INDEX proposals_paid_by_date ON proposals (payment_date, proposal_id) WHERE state = 'DISBURSED';
