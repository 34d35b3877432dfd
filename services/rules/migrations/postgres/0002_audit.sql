-- The audit trail: every state-changing call, who (principal, role, on-behalf-of), what (RPC,
-- target ids), when, from where, with what outcome, under which trace. A change is recorded
-- in its own transaction; a refused change afterwards. Append-only, never pruned.
CREATE TABLE audit_log (
    audit_id     TEXT   PRIMARY KEY,
    occurred_us  BIGINT NOT NULL,
    actor        TEXT   NOT NULL,
    principal    TEXT   NOT NULL,
    role         TEXT   NOT NULL,
    on_behalf_of TEXT,
    rpc          TEXT   NOT NULL,
    targets      TEXT   NOT NULL,
    peer         TEXT,
    outcome      TEXT   NOT NULL,
    trace_id     TEXT   NOT NULL,
    request_id   TEXT
);
CREATE INDEX audit_log_principal ON audit_log (principal, audit_id);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

-- The role the service connects as (database.url); migrations run as the owner
-- (database.owner_url). Operators create it with a password before the first migration, or
-- the owner creates it here (it needs CREATEROLE for that); it is shared by the services'
-- databases of one PostgreSQL server, with privileges granted per database.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'subsidy_runtime') THEN
        CREATE ROLE subsidy_runtime LOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL; -- created concurrently by another database's migration
END
$$;
DO $$
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO subsidy_runtime', current_database());
END
$$;
GRANT USAGE ON SCHEMA public TO subsidy_runtime;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO subsidy_runtime;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO subsidy_runtime;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO subsidy_runtime;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO subsidy_runtime;
-- What is on record stays on record: the runtime role may add to these tables, never change
-- or remove what is there (the triggers refuse it for the owner too).
REVOKE UPDATE, DELETE, TRUNCATE ON audit_log, policy_versions FROM subsidy_runtime;
-- The migration history is the owner's.
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON _sqlx_migrations FROM subsidy_runtime;
