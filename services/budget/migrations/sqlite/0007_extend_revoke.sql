-- Extending holds and revoking commitments (issue 16). A revoked reservation keeps its history:
-- the commitment it returned (revoked_fen), when and why; its committed_fen is 0 and its
-- released_fen the whole hold, so the existing checks and the pool's sums stay as they are.
-- SQLite cannot change a CHECK constraint: the table is rebuilt with the new state allowed
-- (nothing references reservations), and its indexes made again.
CREATE TABLE reservations_0007 (
    reservation_id   TEXT PRIMARY KEY,
    pool_id          TEXT   NOT NULL REFERENCES pools (pool_id),
    beneficiary_uscc TEXT   NOT NULL,
    reference        TEXT   NOT NULL,
    state            TEXT   NOT NULL
        CHECK (state IN ('HELD', 'COMMITTED', 'RELEASED', 'EXPIRED', 'REVOKED')),
    held_fen         BIGINT NOT NULL CHECK (held_fen > 0),
    committed_fen    BIGINT NOT NULL DEFAULT 0 CHECK (committed_fen >= 0),
    released_fen     BIGINT NOT NULL DEFAULT 0 CHECK (released_fen >= 0),
    created_us       BIGINT NOT NULL,
    expires_us       BIGINT NOT NULL,
    settled_us       BIGINT,
    release_reason   TEXT,
    revoked_fen      BIGINT NOT NULL DEFAULT 0 CHECK (revoked_fen >= 0),
    revoked_us       BIGINT,
    revoke_reason    TEXT,
    CHECK ((state = 'HELD' AND committed_fen = 0 AND released_fen = 0 AND settled_us IS NULL)
        OR (state <> 'HELD' AND committed_fen + released_fen = held_fen AND settled_us IS NOT NULL)),
    CHECK (state = 'COMMITTED' OR committed_fen = 0),
    CHECK ((state = 'REVOKED' AND revoked_fen > 0 AND revoked_us IS NOT NULL AND revoke_reason IS NOT NULL)
        OR (state <> 'REVOKED' AND revoked_fen = 0 AND revoked_us IS NULL AND revoke_reason IS NULL))
);
INSERT INTO reservations_0007 (reservation_id, pool_id, beneficiary_uscc, reference, state,
    held_fen, committed_fen, released_fen, created_us, expires_us, settled_us, release_reason)
SELECT reservation_id, pool_id, beneficiary_uscc, reference, state,
    held_fen, committed_fen, released_fen, created_us, expires_us, settled_us, release_reason
FROM reservations;
DROP TABLE reservations;
ALTER TABLE reservations_0007 RENAME TO reservations;
CREATE INDEX reservations_held_by_expiry ON reservations (expires_us) WHERE state = 'HELD';
CREATE INDEX reservations_by_pool ON reservations (pool_id, created_us DESC, reservation_id DESC);
CREATE INDEX reservations_by_beneficiary ON reservations (pool_id, beneficiary_uscc);
CREATE INDEX reservations_by_reference ON reservations (reference);
CREATE INDEX reservations_held_by_pool_expiry ON reservations (pool_id, expires_us) WHERE state = 'HELD';

-- The new expiry an EXTENDED entry records (covered by its hash, docs/LEDGER.md); NULL for
-- every other kind.
ALTER TABLE ledger_entries ADD COLUMN expires_us BIGINT
    CHECK ((kind = 'EXTENDED') = (expires_us IS NOT NULL));
