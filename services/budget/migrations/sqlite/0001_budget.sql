-- Budget schema (SQLite). Money is integer fen; times are integer microseconds since the
-- Unix epoch by the database clock. CHECK constraints are the backstop of the invariants that
-- the conditional updates in storage.rs maintain.

CREATE TABLE pools (
    pool_id              TEXT PRIMARY KEY,
    display_name         TEXT   NOT NULL,
    total_fen            BIGINT NOT NULL CHECK (total_fen > 0),
    held_fen             BIGINT NOT NULL DEFAULT 0 CHECK (held_fen >= 0),
    committed_fen        BIGINT NOT NULL DEFAULT 0 CHECK (committed_fen >= 0),
    beneficiary_cap_fen  BIGINT CHECK (beneficiary_cap_fen > 0),
    reservation_cap_fen  BIGINT CHECK (reservation_cap_fen > 0),
    default_hold_seconds BIGINT NOT NULL CHECK (default_hold_seconds > 0),
    reservation_count    BIGINT NOT NULL DEFAULT 0,
    ledger_sequence      BIGINT NOT NULL DEFAULT 0,
    ledger_head_hash     TEXT   NOT NULL,
    created_us           BIGINT NOT NULL,
    CHECK (held_fen + committed_fen <= total_fen)
);

CREATE TABLE beneficiary_usage (
    pool_id          TEXT   NOT NULL REFERENCES pools (pool_id),
    beneficiary_uscc TEXT   NOT NULL,
    held_fen         BIGINT NOT NULL DEFAULT 0 CHECK (held_fen >= 0),
    committed_fen    BIGINT NOT NULL DEFAULT 0 CHECK (committed_fen >= 0),
    PRIMARY KEY (pool_id, beneficiary_uscc)
);

CREATE TABLE reservations (
    reservation_id   TEXT PRIMARY KEY,
    pool_id          TEXT   NOT NULL REFERENCES pools (pool_id),
    beneficiary_uscc TEXT   NOT NULL,
    reference        TEXT   NOT NULL,
    state            TEXT   NOT NULL CHECK (state IN ('HELD', 'COMMITTED', 'RELEASED', 'EXPIRED')),
    held_fen         BIGINT NOT NULL CHECK (held_fen > 0),
    committed_fen    BIGINT NOT NULL DEFAULT 0 CHECK (committed_fen >= 0),
    released_fen     BIGINT NOT NULL DEFAULT 0 CHECK (released_fen >= 0),
    created_us       BIGINT NOT NULL,
    expires_us       BIGINT NOT NULL,
    settled_us       BIGINT,
    release_reason   TEXT,
    CHECK ((state = 'HELD' AND committed_fen = 0 AND released_fen = 0 AND settled_us IS NULL)
        OR (state <> 'HELD' AND committed_fen + released_fen = held_fen AND settled_us IS NOT NULL)),
    CHECK (state = 'COMMITTED' OR committed_fen = 0)
);
CREATE INDEX reservations_held_by_expiry ON reservations (expires_us) WHERE state = 'HELD';
CREATE INDEX reservations_by_pool ON reservations (pool_id, created_us DESC, reservation_id DESC);
CREATE INDEX reservations_by_beneficiary ON reservations (pool_id, beneficiary_uscc);
CREATE INDEX reservations_by_reference ON reservations (reference);

CREATE TABLE ledger_entries (
    entry_id             INTEGER PRIMARY KEY AUTOINCREMENT,
    pool_id              TEXT   NOT NULL REFERENCES pools (pool_id),
    sequence             BIGINT NOT NULL CHECK (sequence > 0),
    kind                 TEXT   NOT NULL,
    reservation_id       TEXT   NOT NULL,
    beneficiary_uscc     TEXT   NOT NULL,
    actor                TEXT   NOT NULL,
    request_id           TEXT   NOT NULL,
    amount_fen           BIGINT NOT NULL,
    released_fen         BIGINT NOT NULL,
    held_before_fen      BIGINT NOT NULL,
    held_after_fen       BIGINT NOT NULL,
    committed_before_fen BIGINT NOT NULL,
    committed_after_fen  BIGINT NOT NULL,
    created_us           BIGINT NOT NULL,
    previous_hash        TEXT   NOT NULL,
    entry_hash           TEXT   NOT NULL,
    UNIQUE (pool_id, sequence)
);

-- The ledger is append-only: the database refuses to change or remove an entry.
CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE ON ledger_entries
BEGIN
    SELECT RAISE(ABORT, 'ledger_entries is append-only');
END;
CREATE TRIGGER ledger_entries_no_delete BEFORE DELETE ON ledger_entries
BEGIN
    SELECT RAISE(ABORT, 'ledger_entries is append-only');
END;

CREATE TABLE idempotency_keys (
    request_id  TEXT PRIMARY KEY,
    operation   TEXT   NOT NULL,
    fingerprint TEXT   NOT NULL,
    response    BLOB,
    created_us  BIGINT NOT NULL
);
