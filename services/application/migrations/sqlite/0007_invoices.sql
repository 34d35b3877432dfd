-- The invoices of compute-voucher claims (issue 16). A claim carries the VAT invoices issued
-- under its contract; a reviewer verifies each, and approval settles on the verified total.
-- * invoice_code: 10 or 12 digits with an 8-digit invoice_number, or '' for a fully
--   digitalised invoice whose invoice_number has 20 digits. Code and number identify it.
-- * released: 1 once the claim was withdrawn. Like its contract, an invoice is claimed at most
--   once whatever the outcome, unless its claim was withdrawn: the partial unique index below
--   enforces this, so two concurrent claims with one invoice cannot both be recorded.
-- * position: the order the invoices were given in, per claim.
-- * verification: 'UNVERIFIED', 'VERIFIED' or 'REJECTED', with the reviewer, note and time.
CREATE TABLE claim_invoices (
    claim_id        TEXT   NOT NULL,
    invoice_code    TEXT   NOT NULL,
    invoice_number  TEXT   NOT NULL,
    position        BIGINT NOT NULL CHECK (position >= 0),
    issue_date      TEXT   NOT NULL,
    amount_fen      BIGINT NOT NULL CHECK (amount_fen > 0),
    seller_uscc     TEXT   NOT NULL,
    buyer_uscc      TEXT   NOT NULL,
    verification    TEXT   NOT NULL DEFAULT 'UNVERIFIED'
        CHECK (verification IN ('UNVERIFIED', 'VERIFIED', 'REJECTED')),
    reviewer_id     TEXT   NOT NULL DEFAULT '',
    review_note     TEXT   NOT NULL DEFAULT '',
    verified_us     BIGINT,
    released        BIGINT NOT NULL DEFAULT 0 CHECK (released IN (0, 1)),
    added_us        BIGINT NOT NULL,
    PRIMARY KEY (claim_id, invoice_code, invoice_number)
);
CREATE UNIQUE INDEX claim_invoices_claimed_once ON claim_invoices (invoice_code, invoice_number)
    WHERE released = 0;
