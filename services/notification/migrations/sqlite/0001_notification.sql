-- Notification schema (SQLite). Money is integer fen; times are integer microseconds since
-- the Unix epoch by the database clock. CHECK constraints are the backstop of the state rules
-- that storage.rs maintains with conditional updates.

-- The head of the feed. Every publication increments it inside its own write transaction
-- (BEGIN IMMEDIATE, one writer at a time), so feed positions commit in order: a reader that sees
-- position N also sees every position below N, which is what lets a stream resume from a cursor
-- without gaps.
CREATE TABLE feed_head (
    singleton BIGINT PRIMARY KEY CHECK (singleton = 1),
    last_seq  BIGINT NOT NULL CHECK (last_seq >= 0)
);
INSERT INTO feed_head (singleton, last_seq) VALUES (1, 0);

CREATE TABLE events (
    seq             BIGINT PRIMARY KEY CHECK (seq > 0),
    event_id        TEXT   NOT NULL UNIQUE,
    event_type      TEXT   NOT NULL,
    application_id  TEXT   NOT NULL,
    enterprise_uscc TEXT   NOT NULL,
    program         TEXT   NOT NULL,
    amount_fen      BIGINT CHECK (amount_fen > 0),
    occur_us        BIGINT NOT NULL,
    traceparent     TEXT   NOT NULL,
    tracestate      TEXT   NOT NULL,
    payload_json    TEXT   NOT NULL,
    language        TEXT   NOT NULL CHECK (language IN ('', 'zh', 'en')),
    recipient_email TEXT   NOT NULL,
    round_id        TEXT   NOT NULL,
    source          TEXT   NOT NULL,
    content_hash    TEXT   NOT NULL,
    published_us    BIGINT NOT NULL
);
CREATE INDEX events_by_application ON events (application_id, seq);
CREATE INDEX events_by_enterprise ON events (enterprise_uscc, seq);

CREATE TABLE subscriptions (
    subscription_id            TEXT PRIMARY KEY,
    endpoint_url               TEXT   NOT NULL,
    event_types                TEXT   NOT NULL,
    program_filter             TEXT   NOT NULL,
    enterprise_uscc_filter     TEXT   NOT NULL,
    description                TEXT   NOT NULL,
    max_in_flight              BIGINT NOT NULL CHECK (max_in_flight BETWEEN 0 AND 64),
    contact_email              TEXT   NOT NULL,
    state                      TEXT   NOT NULL CHECK (state IN ('ACTIVE', 'DISABLED')),
    disabled_reason            TEXT   NOT NULL CHECK (disabled_reason IN ('', 'MANUAL', 'ENDPOINT_FAILING')),
    disabled_us                BIGINT,
    failing_since_us           BIGINT,
    secret                     TEXT   NOT NULL,
    previous_secret            TEXT,
    previous_secret_expires_us BIGINT,
    -- Deliveries of this subscription now IN_FLIGHT; the per-endpoint limit is enforced by a
    -- conditional increment of this counter.
    in_flight                  BIGINT NOT NULL DEFAULT 0 CHECK (in_flight >= 0),
    created_us                 BIGINT NOT NULL,
    updated_us                 BIGINT NOT NULL,
    CHECK ((state = 'ACTIVE' AND disabled_reason = '' AND disabled_us IS NULL)
        OR (state = 'DISABLED' AND disabled_reason <> '' AND disabled_us IS NOT NULL)),
    CHECK ((previous_secret IS NULL) = (previous_secret_expires_us IS NULL))
);
CREATE INDEX subscriptions_by_creation ON subscriptions (created_us, subscription_id);

-- One row per event and channel (and subscription for webhooks). subscription_id is not a
-- foreign key: the delivery log outlives a deleted subscription.
CREATE TABLE deliveries (
    delivery_id      TEXT PRIMARY KEY,
    event_seq        BIGINT NOT NULL REFERENCES events (seq),
    event_id         TEXT   NOT NULL,
    event_type       TEXT   NOT NULL,
    channel          TEXT   NOT NULL CHECK (channel IN ('WEBHOOK', 'EMAIL')),
    subscription_id  TEXT   NOT NULL,
    recipient_email  TEXT   NOT NULL,
    ordering_key     TEXT   NOT NULL,
    state            TEXT   NOT NULL CHECK (state IN ('PENDING', 'IN_FLIGHT', 'DELIVERED', 'FAILED_RETRYING', 'DEAD_LETTERED', 'CANCELLED')),
    attempt_count    BIGINT NOT NULL DEFAULT 0 CHECK (attempt_count >= 0),
    run_attempts     BIGINT NOT NULL DEFAULT 0 CHECK (run_attempts >= 0 AND run_attempts <= attempt_count),
    next_attempt_us  BIGINT,
    lease_until_us   BIGINT,
    -- Set while IN_FLIGHT: only the holder of the claim may record its attempt.
    claim_token      TEXT,
    last_status_code BIGINT NOT NULL DEFAULT 0,
    last_error       TEXT   NOT NULL DEFAULT '',
    redelivery_count BIGINT NOT NULL DEFAULT 0 CHECK (redelivery_count >= 0),
    created_us       BIGINT NOT NULL,
    updated_us       BIGINT NOT NULL,
    delivered_us     BIGINT,
    UNIQUE (event_id, channel, subscription_id),
    CHECK ((channel = 'WEBHOOK') = (subscription_id <> '')),
    CHECK ((state = 'IN_FLIGHT') = (lease_until_us IS NOT NULL)),
    CHECK ((state = 'IN_FLIGHT') = (claim_token IS NOT NULL)),
    CHECK ((state IN ('PENDING', 'FAILED_RETRYING')) = (next_attempt_us IS NOT NULL)),
    CHECK ((state = 'DELIVERED') = (delivered_us IS NOT NULL))
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_us) WHERE state IN ('PENDING', 'FAILED_RETRYING');
CREATE INDEX deliveries_unfinished_by_key ON deliveries (ordering_key, event_seq)
    WHERE state IN ('PENDING', 'IN_FLIGHT', 'FAILED_RETRYING');
CREATE INDEX deliveries_leased ON deliveries (lease_until_us) WHERE state = 'IN_FLIGHT';
CREATE INDEX deliveries_by_subscription ON deliveries (subscription_id, state, event_seq);
CREATE INDEX deliveries_by_event ON deliveries (event_id);
CREATE INDEX deliveries_by_creation ON deliveries (created_us, delivery_id);

CREATE TABLE delivery_attempts (
    delivery_id      TEXT   NOT NULL REFERENCES deliveries (delivery_id),
    attempt_number   BIGINT NOT NULL CHECK (attempt_number > 0),
    start_us         BIGINT NOT NULL,
    latency_ms       BIGINT NOT NULL CHECK (latency_ms >= 0),
    http_status_code BIGINT NOT NULL,
    smtp_reply_code  BIGINT NOT NULL,
    succeeded        BIGINT NOT NULL CHECK (succeeded IN (0, 1)),
    error            TEXT   NOT NULL,
    PRIMARY KEY (delivery_id, attempt_number)
);

CREATE TABLE idempotency_keys (
    request_id  TEXT PRIMARY KEY,
    operation   TEXT   NOT NULL,
    fingerprint TEXT   NOT NULL,
    response    BLOB,
    created_us  BIGINT NOT NULL
);
