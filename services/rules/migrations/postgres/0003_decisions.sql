-- Every evaluation the service answers is stored first, under its decision id (issue 15): the
-- inputs as received, the exact policy version and the result with its trace, encoded as one
-- `subsidy.rules.v1.StoredDecision` message. One INSERT per evaluation, no other statement.
-- The columns beside the record are what reads filter on: the subject enterprise (an applicant
-- reads its own decisions only), the kind and the policy. Times are integer microseconds since
-- the Unix epoch. Kept for good: decisions are evidence for audits, never pruned.
CREATE TABLE decisions (
    decision_id    TEXT   PRIMARY KEY,
    kind           TEXT   NOT NULL CHECK (kind IN ('COMPUTE_VOUCHER', 'DATA_INFRA', 'SELECTION_ROUND')),
    policy_id      TEXT   NOT NULL,
    policy_version TEXT   NOT NULL,
    -- The buyer's or applicant's USCC as given; empty for a ranking.
    subject_uscc   TEXT   NOT NULL,
    evaluated_us   BIGINT NOT NULL,
    record         BYTEA  NOT NULL
);
CREATE INDEX decisions_by_subject ON decisions (subject_uscc, evaluated_us);

-- Stored decisions are immutable: the database refuses to change or remove one.
CREATE FUNCTION decisions_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'stored decisions are immutable';
END;
$$;
CREATE TRIGGER decisions_no_update BEFORE UPDATE OR DELETE ON decisions
    FOR EACH ROW EXECUTE FUNCTION decisions_immutable();

-- The runtime role may add decisions, never change or remove them (the default privileges of
-- 0001 granted it every table's UPDATE and DELETE).
REVOKE UPDATE, DELETE, TRUNCATE ON decisions FROM subsidy_runtime;
