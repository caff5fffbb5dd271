-- Cooldowns shared by every control-plane process on one PostgreSQL (see the PostgreSQL
-- migration of the same number). A SQLite database has one process: its cooldowns are
-- the windows in memory, rebuilt from `actions` at start, and this table stays empty. It
-- exists so that both schemas stay the same.
-- Never edit a landed migration: add a new one.
CREATE TABLE cooldowns (
    tenant  TEXT    NOT NULL,
    host    TEXT    NOT NULL,
    runbook TEXT    NOT NULL,
    last_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, host, runbook)
) STRICT;
