-- Extending holds and revoking commitments (issue 16). A revoked reservation keeps its history:
-- the commitment it returned (revoked_fen), when and why; its committed_fen is 0 and its
-- released_fen the whole hold, so the existing checks and the pool's sums stay as they are.
ALTER TABLE reservations DROP CONSTRAINT reservations_state_check;
ALTER TABLE reservations ADD CONSTRAINT reservations_state_check
    CHECK (state IN ('HELD', 'COMMITTED', 'RELEASED', 'EXPIRED', 'REVOKED'));
ALTER TABLE reservations ADD COLUMN revoked_fen BIGINT NOT NULL DEFAULT 0 CHECK (revoked_fen >= 0);
ALTER TABLE reservations ADD COLUMN revoked_us BIGINT;
ALTER TABLE reservations ADD COLUMN revoke_reason TEXT;
ALTER TABLE reservations ADD CONSTRAINT reservations_revoked_check
    CHECK ((state = 'REVOKED' AND revoked_fen > 0 AND revoked_us IS NOT NULL AND revoke_reason IS NOT NULL)
        OR (state <> 'REVOKED' AND revoked_fen = 0 AND revoked_us IS NULL AND revoke_reason IS NULL));

-- The new expiry an EXTENDED entry records (covered by its hash, docs/LEDGER.md); NULL for
-- every other kind.
ALTER TABLE ledger_entries ADD COLUMN expires_us BIGINT;
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_expiry_check
    CHECK ((kind = 'EXTENDED') = (expires_us IS NOT NULL));
