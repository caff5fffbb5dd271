-- Deployments of published components to hosts (issue #15), and what each host should
-- run and runs, per component name. Never edit a landed migration: add a new one.
CREATE TABLE deployments (
    id               TEXT    PRIMARY KEY,
    tenant           TEXT    NOT NULL,
    name             TEXT    NOT NULL,
    -- The release deployed ('' for a rollback: each host's own target).
    version          TEXT    NOT NULL,
    sha256           TEXT    NOT NULL,
    -- deploy | rollback
    action           TEXT    NOT NULL,
    selector         TEXT    NOT NULL,
    canary_percent   INTEGER NOT NULL,
    soak_ms          INTEGER NOT NULL,
    max_failure_rate REAL    NOT NULL,
    -- canary | rolling | done | halted
    state            TEXT    NOT NULL,
    detail           TEXT    NOT NULL,
    created_at_ms    INTEGER NOT NULL,
    created_by       TEXT    NOT NULL,
    updated_at_ms    INTEGER NOT NULL
) STRICT;

CREATE INDEX deployments_tenant ON deployments (tenant, created_at_ms);

CREATE TABLE host_components (
    tenant           TEXT    NOT NULL,
    host             TEXT    NOT NULL,
    name             TEXT    NOT NULL,
    -- The deployment that last set what is wanted.
    deployment       TEXT    NOT NULL,
    -- deploy | rollback | remove
    action           TEXT    NOT NULL,
    -- What is wanted ('' and remove: the host's own).
    sha256           TEXT    NOT NULL,
    version          TEXT    NOT NULL,
    canary           INTEGER NOT NULL,
    -- pending | held | deployed | refused | halted
    state            TEXT    NOT NULL,
    detail           TEXT    NOT NULL,
    -- What the host said it runs ('' : its own), and what it ran before that.
    running_sha256   TEXT    NOT NULL,
    running_version  TEXT    NOT NULL,
    previous_sha256  TEXT    NOT NULL,
    previous_version TEXT    NOT NULL,
    -- When the host took what is wanted (for the canaries' failure rate).
    deployed_at_ms   INTEGER NOT NULL,
    updated_at_ms    INTEGER NOT NULL,
    PRIMARY KEY (host, name)
) STRICT;

CREATE INDEX host_components_deployment ON host_components (deployment);
