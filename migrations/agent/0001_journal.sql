-- The agent's journal: an invocation it is about to run, written durably before the
-- run starts and removed once the run's record is in the host's log. What is left after
-- a crash names the runs that were cut off: on restart each is recorded `interrupted`
-- (never run again). Never edit a landed migration: add a new one.

CREATE TABLE started (
    invocation_id TEXT    PRIMARY KEY,
    job           TEXT    NOT NULL,
    incident_id   TEXT    NOT NULL,
    tenant        TEXT    NOT NULL,
    runbook       TEXT    NOT NULL,
    sha256        TEXT    NOT NULL,
    -- The job's provenance (JSON), so the interrupted record says who decided the run.
    provenance    TEXT    NOT NULL,
    dry_run       INTEGER NOT NULL,
    started_at_ms INTEGER NOT NULL
) STRICT;
