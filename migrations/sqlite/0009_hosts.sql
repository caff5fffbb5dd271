-- The hosts a control plane serves, each owned by one tenant, and the single-use tokens
-- agents enroll with. `runwarden up` registers its own host at start; a fleet server
-- registers each host whose agent enrolls.
-- Never edit a landed migration: add a new one.

CREATE TABLE hosts (
    id             TEXT    PRIMARY KEY,
    tenant         TEXT    NOT NULL,
    -- JSON object of labels (given with the enrollment token; rules match them).
    labels         TEXT    NOT NULL,
    -- JSON of the platform inventory the agent reported.
    inventory      TEXT    NOT NULL,
    -- The agent's policy (TOML) as enrolled: the catalog and prechecks use it; the agent
    -- checks its own copy before it runs anything.
    policy         TEXT    NOT NULL,
    -- The host's signing key: every record of its log must verify under it.
    key_name       TEXT    NOT NULL,
    public_key     BLOB    NOT NULL,
    enrolled_at_ms INTEGER NOT NULL,
    last_seen_ms   INTEGER,
    -- 1: no new jobs are dispatched to it (`runwarden hosts drain`).
    drained        INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE INDEX hosts_tenant ON hosts (tenant, id);

CREATE TABLE enrollment_tokens (
    id            TEXT    PRIMARY KEY,
    -- SHA-256 (hex) of the secret: the secret itself is never stored.
    secret_sha256 TEXT    NOT NULL UNIQUE,
    tenant        TEXT    NOT NULL,
    -- JSON object of the labels the enrolled host gets.
    labels        TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    -- Set once, when an agent enrolled with it: a token is good for one host.
    used_at_ms    INTEGER,
    used_by       TEXT
) STRICT;
