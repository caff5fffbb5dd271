-- Each tenant's view of the database's own log: the records made for that tenant (as
-- each record's signed statement names it), in log order, numbered 0, 1, 2, … — itself an
-- append-only Merkle tree, which the log's key signs under the origin `ORIGIN/tenant/T`.
-- A tenant's bundle holds the whole view up to a signed checkpoint of it: proof that it
-- holds every record of the tenant's share of a log that several tenants share (the
-- control plane's). Derived from the log; caught up when a tenant is exported.
-- Never edit a landed migration: add a new one.

CREATE TABLE tenant_leaves (
    tenant TEXT   NOT NULL,
    -- Position in the tenant's view: 0, 1, 2, … with no gaps.
    seq    BIGINT NOT NULL CHECK (seq >= 0),
    -- The record in the log.
    idx    BIGINT NOT NULL UNIQUE REFERENCES evidence_log (idx),
    PRIMARY KEY (tenant, seq)
);

-- How far the views are caught up: every record below `scanned` is in its tenant's view.
CREATE TABLE tenant_views (
    singleton INTEGER NOT NULL PRIMARY KEY CHECK (singleton = 0),
    scanned   BIGINT  NOT NULL CHECK (scanned >= 0)
);
INSERT INTO tenant_views (singleton, scanned) VALUES (0, 0);

-- The signed checkpoints of each view, to prove later ones consistent with them.
CREATE TABLE tenant_checkpoints (
    tenant        TEXT   NOT NULL,
    size          BIGINT NOT NULL CHECK (size >= 0),
    root          BYTEA  NOT NULL CHECK (length(root) = 32),
    note          TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant, size)
);
