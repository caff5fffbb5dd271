-- Incidents still `processing`, by host: read at every start and by the periodic sweep
-- that concludes incidents a failed write left unfinished (every 30 s in `runwarden up`).
-- Partial, so it holds only the few unfinished rows instead of scanning every incident.
CREATE INDEX incidents_unfinished ON incidents (host, received_at_ms) WHERE status = 'processing';
