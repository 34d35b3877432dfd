-- Rules schema (SQLite). Published policy versions are immutable rows; the dishonesty
-- denylist is replaced whole; `rules_state` counts both kinds of change so that every replica
-- notices them before its next evaluation. Times are integer microseconds since the Unix epoch
-- by the database clock; calendar dates are ISO 8601 text (`2025-12-31`), which sorts as dates.

CREATE TABLE policy_versions (
    policy_id        TEXT    NOT NULL CHECK (policy_id IN ('compute-voucher', 'data-infra')),
    version          TEXT    NOT NULL,
    effective_start  TEXT    NOT NULL,
    effective_end    TEXT    NOT NULL,
    parameters_json  TEXT    NOT NULL,
    document_json    TEXT    NOT NULL,
    description      TEXT    NOT NULL,
    content_sha256   TEXT    NOT NULL,
    publisher        TEXT    NOT NULL,
    -- The global order of publication: the later of two overlapping versions wins.
    publish_sequence BIGINT  NOT NULL UNIQUE CHECK (publish_sequence > 0),
    published_us     BIGINT  NOT NULL,
    PRIMARY KEY (policy_id, version),
    CHECK (effective_start <= effective_end)
);
CREATE INDEX policy_versions_by_publication ON policy_versions (policy_id, publish_sequence DESC);

-- Published versions are immutable: the database refuses to change or remove one.
CREATE TRIGGER policy_versions_no_update BEFORE UPDATE ON policy_versions
BEGIN
    SELECT RAISE(ABORT, 'published policy versions are immutable');
END;
CREATE TRIGGER policy_versions_no_delete BEFORE DELETE ON policy_versions
BEGIN
    SELECT RAISE(ABORT, 'published policy versions are immutable');
END;

CREATE TABLE denylist_entries (
    uscc        TEXT PRIMARY KEY,
    reason      TEXT NOT NULL,
    source      TEXT NOT NULL,
    listed_date TEXT
);

-- One row. `policy_generation` is the publish_sequence of the newest version;
-- `denylist_generation` counts replacements of the denylist.
CREATE TABLE rules_state (
    singleton            INTEGER PRIMARY KEY CHECK (singleton = 1),
    policy_generation    BIGINT  NOT NULL,
    denylist_generation  BIGINT  NOT NULL,
    denylist_sha256      TEXT    NOT NULL,
    denylist_replaced_us BIGINT
);
-- The SHA-256 of the empty list's canonical form, `[]`.
INSERT INTO rules_state (singleton, policy_generation, denylist_generation, denylist_sha256, denylist_replaced_us)
VALUES (1, 0, 0, '4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945', NULL);

CREATE TABLE idempotency_keys (
    request_id  TEXT PRIMARY KEY,
    operation   TEXT   NOT NULL,
    fingerprint TEXT   NOT NULL,
    response    BLOB,
    created_us  BIGINT NOT NULL
);
