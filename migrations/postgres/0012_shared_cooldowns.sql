-- Cooldowns shared by every control-plane process on one PostgreSQL: a run of a runbook
-- on a host is admitted only by claiming its row here, atomically, so two servers never
-- both start the same runbook on the same host within its cooldown. (Each process also
-- keeps the windows in memory, rebuilt from `actions` at start.)
-- Never edit a landed migration: add a new one.
CREATE TABLE cooldowns (
    tenant  TEXT   NOT NULL,
    host    TEXT   NOT NULL,
    runbook TEXT   NOT NULL,
    -- When the latest admitted run started (ms).
    last_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant, host, runbook)
);
