-- The registry of compute providers and their data centers (issue 16). A provider is admitted
-- on registration; its status changes (suspend, revoke, readmit), each with the day it takes
-- effect and why, are kept in `provider_status_changes`, append-only: the status of a provider
-- on a day is the last change whose `effective_date` is on or before it. `providers` holds the
-- current status for listing. Data centers are registered with their provider; capacity is
-- decimal text (PFLOPS of intelligent compute), never a float. Dates are ISO 8601 text, times
-- integer microseconds since the Unix epoch by the database clock.
CREATE TABLE providers (
    uscc           TEXT    PRIMARY KEY,
    name           TEXT    NOT NULL,
    status         TEXT    NOT NULL CHECK (status IN ('ADMITTED', 'SUSPENDED', 'REVOKED')),
    effective_date TEXT    NOT NULL,
    reason         TEXT    NOT NULL,
    registered_us  INTEGER NOT NULL,
    updated_us     INTEGER NOT NULL
);
CREATE INDEX providers_by_status ON providers (status, uscc);

CREATE TABLE provider_data_centers (
    uscc            TEXT    NOT NULL REFERENCES providers (uscc),
    position        INTEGER NOT NULL,
    name            TEXT    NOT NULL,
    division_code   TEXT    NOT NULL,
    capacity_pflops TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('IN_SERVICE', 'RETIRED')),
    PRIMARY KEY (uscc, position)
);

CREATE TABLE provider_status_changes (
    uscc           TEXT    NOT NULL REFERENCES providers (uscc),
    sequence       INTEGER NOT NULL,
    status         TEXT    NOT NULL CHECK (status IN ('ADMITTED', 'SUSPENDED', 'REVOKED')),
    effective_date TEXT    NOT NULL,
    reason         TEXT    NOT NULL,
    actor          TEXT    NOT NULL,
    recorded_us    INTEGER NOT NULL,
    PRIMARY KEY (uscc, sequence)
);

-- Registry writes take the `rules_state` row first, so that they are serialised.
ALTER TABLE rules_state ADD COLUMN registry_generation INTEGER NOT NULL DEFAULT 0;

-- SQLite has no roles: the database itself refuses to change or remove a status change.
CREATE TRIGGER provider_status_changes_no_update BEFORE UPDATE ON provider_status_changes
BEGIN
    SELECT RAISE(ABORT, 'provider_status_changes is append-only');
END;
CREATE TRIGGER provider_status_changes_no_delete BEFORE DELETE ON provider_status_changes
BEGIN
    SELECT RAISE(ABORT, 'provider_status_changes is append-only');
END;
