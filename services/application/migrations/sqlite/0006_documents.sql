-- Documents of claims and proposals (issue 16): contracts, invoices, payment proofs and
-- proposal files. The content lives in the document store (object storage), once per SHA-256
-- under `sha256/ab/abcd…`, and is never overwritten; a row records one upload of it for one
-- application. Rows are appended with the request's stored response and never changed.
CREATE TABLE documents (
    document_id    TEXT    PRIMARY KEY,
    application_id TEXT    NOT NULL,
    kind           TEXT    NOT NULL CHECK (kind IN ('CONTRACT', 'INVOICE', 'PAYMENT_PROOF',
                       'PROPOSAL', 'OTHER')),
    file_name      TEXT    NOT NULL,
    media_type     TEXT    NOT NULL,
    size_bytes     INTEGER NOT NULL CHECK (size_bytes > 0),
    sha256_hex     TEXT    NOT NULL CHECK (length(sha256_hex) = 64),
    object_key     TEXT    NOT NULL,
    uploaded_by    TEXT    NOT NULL,
    uploaded_us    INTEGER NOT NULL
);

-- ListDocuments pages an application's documents oldest first; the per-application total and
-- the attachment links read the same index.
CREATE INDEX documents_by_application ON documents (application_id, uploaded_us, document_id);

CREATE TRIGGER documents_no_update BEFORE UPDATE ON documents
BEGIN
    SELECT RAISE(ABORT, 'documents is append-only');
END;
CREATE TRIGGER documents_no_delete BEFORE DELETE ON documents
BEGIN
    SELECT RAISE(ABORT, 'documents is append-only');
END;
