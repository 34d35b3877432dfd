-- A reservation's ledger entries found without reading its pool's whole ledger
-- (ListLedgerEntries with `reservation_id`: the application's disbursement export asks for each
-- paid reservation's entries).
CREATE INDEX ledger_entries_by_reservation ON ledger_entries (reservation_id, entry_id);
