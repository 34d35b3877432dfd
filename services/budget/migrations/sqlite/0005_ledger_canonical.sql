-- The encoding each entry's hash covers: 1 for entries written before the canonical encoding
-- (fields joined with '|'), 2 for the length-prefixed canonical encoding of docs/LEDGER.md that
-- every new entry uses. Existing entries keep version 1 and are verified under it.
ALTER TABLE ledger_entries ADD COLUMN hash_version BIGINT NOT NULL DEFAULT 1;
