-- The audit trail: every state-changing call, who (principal, role, on-behalf-of), what (RPC,
-- target ids), when, from where, with what outcome, under which trace. A change is recorded
-- in its own transaction; a refused change afterwards. Append-only, never pruned.
CREATE TABLE audit_log (
    audit_id     TEXT    PRIMARY KEY,
    occurred_us  INTEGER NOT NULL,
    actor        TEXT    NOT NULL,
    principal    TEXT    NOT NULL,
    role         TEXT    NOT NULL,
    on_behalf_of TEXT,
    rpc          TEXT    NOT NULL,
    targets      TEXT    NOT NULL,
    peer         TEXT,
    outcome      TEXT    NOT NULL,
    trace_id     TEXT    NOT NULL,
    request_id   TEXT
);
CREATE INDEX audit_log_principal ON audit_log (principal, audit_id);

-- SQLite has no roles: the database itself refuses to change or remove an audit record.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
