-- Every runbook run the pipeline made, with its outcome: what planners learn from (a
-- runbook that failed on this host recently is marked), what the offline planner
-- retrieves (past resolutions of similar incidents), and what the flywheel counts.
-- Never edit a landed migration: add a new one.

CREATE TABLE runs (
    invocation_id TEXT    PRIMARY KEY,
    incident_id   TEXT    NOT NULL,
    tenant        TEXT    NOT NULL,
    host          TEXT    NOT NULL,
    runbook       TEXT    NOT NULL,
    -- healed | no-op | failed | refused | invalid_params | timeout | …
    status        TEXT    NOT NULL,
    summary       TEXT    NOT NULL,
    -- L1 | L2 | L3: who decided it.
    tier          TEXT    NOT NULL,
    dry_run       BOOLEAN NOT NULL,
    -- Incident type and service, and the params it ran with (JSON): the signature
    -- planners compare against.
    incident_type TEXT    NOT NULL,
    service       TEXT    NOT NULL,
    message       TEXT    NOT NULL,
    params        TEXT    NOT NULL,
    at_ms         BIGINT  NOT NULL
);

CREATE INDEX runs_tenant ON runs (tenant, at_ms);
CREATE INDEX runs_type ON runs (tenant, incident_type, at_ms);
