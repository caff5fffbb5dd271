-- One signer per log. A database's own log (evidence_log, checkpoints) is signed by one
-- key under one origin: the control plane's in a server, the host's in an agent. The first
-- checkpoint claims it; a checkpoint by another key or under another origin is refused.
-- The logs of other signers (each host's log, at the control plane) are mirrored beside
-- it, per origin, each checked against its signer's key and its own signed checkpoints.
-- Never edit a landed migration: add a new one.

CREATE TABLE log_identity (
    singleton     BIGINT NOT NULL PRIMARY KEY CHECK (singleton = 0),
    origin        TEXT    NOT NULL,
    -- The signing key's name and 4-byte key id (hex), as its signed notes name it.
    key_name      TEXT    NOT NULL,
    key_id        TEXT    NOT NULL,
    -- The public key (32 bytes) its records and checkpoints verify under.
    public_key    BYTEA    NOT NULL,
    created_at_ms BIGINT NOT NULL
);

-- The head of each mirrored log: how far it is held and the signed checkpoint of that.
CREATE TABLE mirrored_logs (
    origin        TEXT    NOT NULL PRIMARY KEY,
    key_name      TEXT    NOT NULL,
    key_id        TEXT    NOT NULL,
    -- The public key (32 bytes) every record and checkpoint of the log must verify under.
    public_key    BYTEA    NOT NULL,
    size          BIGINT NOT NULL CHECK (size >= 0),
    root          BYTEA    NOT NULL,
    -- The compact Merkle tree's frontier (32-byte hashes, concatenated), to extend it.
    frontier      BYTEA    NOT NULL,
    -- The signed checkpoint of size, as the log's signer wrote it.
    note          TEXT    NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

CREATE TABLE mirrored_records (
    origin         TEXT    NOT NULL,
    idx            BIGINT NOT NULL CHECK (idx >= 0),
    leaf_hash      BYTEA    NOT NULL,
    envelope       BYTEA    NOT NULL,
    invocation_id  TEXT    NOT NULL,
    host_id        TEXT    NOT NULL,
    runbook        TEXT    NOT NULL,
    status         TEXT    NOT NULL,
    started_at_ms  BIGINT NOT NULL,
    recorded_at_ms BIGINT NOT NULL,
    PRIMARY KEY (origin, idx),
    UNIQUE (origin, invocation_id)
);

CREATE INDEX mirrored_records_host ON mirrored_records (host_id, started_at_ms);
