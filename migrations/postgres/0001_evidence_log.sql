-- The evidence log: one DSSE-signed record per invocation, as leaves of an append-only
-- RFC 6962 Merkle tree, plus the signed checkpoints of that tree.
-- Never edit a landed migration: add a new one.

CREATE TABLE evidence_log (
    -- Leaf index: 0, 1, 2, … with no gaps.
    idx            BIGINT PRIMARY KEY CHECK (idx >= 0),
    -- RFC 6962 leaf hash of `envelope` (32 bytes).
    leaf_hash      BYTEA  NOT NULL CHECK (length(leaf_hash) = 32),
    -- The DSSE envelope, exactly the bytes that were hashed.
    envelope       BYTEA  NOT NULL,
    invocation_id  TEXT   NOT NULL UNIQUE,
    host_id        TEXT   NOT NULL,
    runbook        TEXT   NOT NULL,
    status         TEXT   NOT NULL,
    started_at_ms  BIGINT NOT NULL,
    recorded_at_ms BIGINT NOT NULL
);

CREATE INDEX evidence_log_started ON evidence_log (started_at_ms);
CREATE INDEX evidence_log_host ON evidence_log (host_id, started_at_ms);
CREATE INDEX evidence_log_runbook ON evidence_log (runbook, started_at_ms);

CREATE TABLE checkpoints (
    -- Tree size the checkpoint commits to.
    size          BIGINT PRIMARY KEY CHECK (size >= 0),
    root          BYTEA  NOT NULL CHECK (length(root) = 32),
    -- The signed note, as published.
    note          TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL
);
