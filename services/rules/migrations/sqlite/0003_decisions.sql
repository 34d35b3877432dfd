-- Every evaluation the service answers is stored first, under its decision id (issue 15): the
-- inputs as received, the exact policy version and the result with its trace, encoded as one
-- `subsidy.rules.v1.StoredDecision` message. One INSERT per evaluation, no other statement.
-- The columns beside the record are what reads filter on: the subject enterprise (an applicant
-- reads its own decisions only), the kind and the policy. Times are integer microseconds since
-- the Unix epoch. Kept for good: decisions are evidence for audits, never pruned.
CREATE TABLE decisions (
    decision_id    TEXT    PRIMARY KEY,
    kind           TEXT    NOT NULL CHECK (kind IN ('COMPUTE_VOUCHER', 'DATA_INFRA', 'SELECTION_ROUND')),
    policy_id      TEXT    NOT NULL,
    policy_version TEXT    NOT NULL,
    -- The buyer's or applicant's USCC as given; empty for a ranking.
    subject_uscc   TEXT    NOT NULL,
    evaluated_us   INTEGER NOT NULL,
    record         BLOB    NOT NULL
);
CREATE INDEX decisions_by_subject ON decisions (subject_uscc, evaluated_us);

-- SQLite has no roles: the database itself refuses to change or remove a stored decision.
CREATE TRIGGER decisions_no_update BEFORE UPDATE ON decisions
BEGIN
    SELECT RAISE(ABORT, 'stored decisions are immutable');
END;
CREATE TRIGGER decisions_no_delete BEFORE DELETE ON decisions
BEGIN
    SELECT RAISE(ABORT, 'stored decisions are immutable');
END;
