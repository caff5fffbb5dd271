-- Which control-plane process drives a deployment now (several may share one database):
-- only the holder of an unexpired claim sends its jobs and judges it (issue #15).
-- Never edit a landed migration: add a new one.
ALTER TABLE deployments ADD COLUMN claimed_by TEXT NOT NULL DEFAULT '';
ALTER TABLE deployments ADD COLUMN claimed_until_ms INTEGER NOT NULL DEFAULT 0;
