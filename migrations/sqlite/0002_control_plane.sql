-- Control-plane state: incidents and what was decided about them, the runbook actions
-- guardrails count (cooldowns, circuit breakers, repeats survive restarts), API tokens.
-- Never edit a landed migration: add a new one.

CREATE TABLE incidents (
    id             TEXT    PRIMARY KEY,
    tenant         TEXT    NOT NULL,
    host           TEXT    NOT NULL,
    -- (tenant, host, type, service), hashed: dedupe and repeat detection.
    fingerprint    TEXT    NOT NULL,
    status         TEXT    NOT NULL,
    received_at_ms INTEGER NOT NULL,
    updated_at_ms  INTEGER NOT NULL,
    -- The whole incident record, JSON.
    record         TEXT    NOT NULL
) STRICT;

CREATE INDEX incidents_tenant ON incidents (tenant, received_at_ms);
CREATE INDEX incidents_fingerprint ON incidents (fingerprint, received_at_ms);

-- One row per runbook run the pipeline started (dry runs included).
CREATE TABLE actions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant      TEXT    NOT NULL,
    host        TEXT    NOT NULL,
    runbook     TEXT    NOT NULL,
    incident_id TEXT    NOT NULL,
    at_ms       INTEGER NOT NULL
) STRICT;

CREATE INDEX actions_at ON actions (at_ms);

CREATE TABLE api_tokens (
    id            TEXT    PRIMARY KEY,
    tenant        TEXT    NOT NULL,
    -- read | operate | admin
    scope         TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    -- SHA-256 (hex) of the secret: the secret itself is never stored.
    secret_sha256 TEXT    NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL,
    revoked       INTEGER NOT NULL DEFAULT 0
) STRICT;
