-- L3: what a human must decide, by when. One row per incident that ended at L3
-- (escalated, or awaiting approval). Never edit a landed migration: add a new one.

CREATE TABLE escalations (
    id               TEXT    PRIMARY KEY,
    incident_id      TEXT    NOT NULL UNIQUE,
    tenant           TEXT    NOT NULL,
    host             TEXT    NOT NULL,
    severity         TEXT    NOT NULL,
    reason           TEXT    NOT NULL,
    -- open | acknowledged | approved | denied | expired | resolved
    state            TEXT    NOT NULL,
    -- What a human may approve, JSON {"runbook", "params"}; empty when nothing was proposed.
    proposal         TEXT    NOT NULL,
    created_at_ms    BIGINT  NOT NULL,
    sla_deadline_ms  BIGINT  NOT NULL,
    updated_at_ms    BIGINT  NOT NULL,
    -- Who decided, when, and what they said.
    decided_by       TEXT    NOT NULL DEFAULT '',
    decided_at_ms    BIGINT,
    note             TEXT    NOT NULL DEFAULT ''
);

CREATE INDEX escalations_tenant ON escalations (tenant, created_at_ms);
CREATE INDEX escalations_open ON escalations (state, sla_deadline_ms);
