-- What an agent says in its heartbeat: its version and how many records its log holds
-- (against what the control plane has mirrored, a host's backlog shows).
-- Never edit a landed migration: add a new one.
ALTER TABLE hosts ADD COLUMN agent_version TEXT;
ALTER TABLE hosts ADD COLUMN log_size BIGINT;
