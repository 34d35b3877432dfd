-- The rules service's decisions that shaped each claim and proposal (issue 15): the first
-- evaluation (or screening), each evaluation again (a concurrent claim changed the
-- enterprise's usage), the re-evaluation on approval, and the ranking of the proposal's round.
-- A link is appended in the transaction that records what the decision did, and never changed:
-- an auditor reads a claim's decisions in the order they were linked and fetches each one from
-- the rules service (GetDecision) to see and replay it.
CREATE TABLE decision_links (
    application_id TEXT    NOT NULL,
    decision_id    TEXT    NOT NULL,
    purpose        TEXT    NOT NULL CHECK (purpose IN ('EVALUATION', 'REEVALUATION',
                       'APPROVAL_RECHECK', 'RANKING')),
    linked_us      INTEGER NOT NULL,
    PRIMARY KEY (application_id, decision_id)
);

CREATE TRIGGER decision_links_no_update BEFORE UPDATE ON decision_links
BEGIN
    SELECT RAISE(ABORT, 'decision_links is append-only');
END;
CREATE TRIGGER decision_links_no_delete BEFORE DELETE ON decision_links
BEGIN
    SELECT RAISE(ABORT, 'decision_links is append-only');
END;
