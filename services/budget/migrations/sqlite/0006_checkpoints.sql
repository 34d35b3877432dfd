-- Signed checkpoints of each pool's ledger head (docs/LEDGER.md): append-only like the ledger.
-- One per pool, sequence and key: a head already signed by the key is not signed again.
CREATE TABLE ledger_checkpoints (
    checkpoint_id INTEGER PRIMARY KEY AUTOINCREMENT,
    pool_id       TEXT   NOT NULL REFERENCES pools (pool_id),
    sequence      BIGINT NOT NULL CHECK (sequence > 0),
    head_hash     TEXT   NOT NULL,
    total_fen     BIGINT NOT NULL,
    held_fen      BIGINT NOT NULL,
    committed_fen BIGINT NOT NULL,
    created_us    BIGINT NOT NULL,
    algorithm     TEXT   NOT NULL,
    key_id        TEXT   NOT NULL,
    signature     TEXT   NOT NULL,
    UNIQUE (pool_id, sequence, key_id)
);
CREATE INDEX ledger_checkpoints_by_pool ON ledger_checkpoints (pool_id, checkpoint_id);

CREATE TRIGGER ledger_checkpoints_no_update BEFORE UPDATE ON ledger_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'ledger_checkpoints is append-only');
END;
CREATE TRIGGER ledger_checkpoints_no_delete BEFORE DELETE ON ledger_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'ledger_checkpoints is append-only');
END;

-- The outbox of the checkpoints' events: a checkpoint without a row here is not yet accepted by
-- the notification service and is published again.
CREATE TABLE checkpoint_publications (
    checkpoint_id INTEGER PRIMARY KEY REFERENCES ledger_checkpoints (checkpoint_id),
    published_us  BIGINT NOT NULL
);
