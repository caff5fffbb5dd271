-- Repeat detection rebuilds its windows at start from the incidents received within the
-- repeat window: it reads incidents by time, not by fingerprint. The fingerprint index
-- (0002) served no query, and every insert wrote it at a random place (it leads with a
-- hash), which slowed inserts as the table grew; this one is written at its end and
-- serves that read without a scan of every incident.
DROP INDEX incidents_fingerprint;
CREATE INDEX incidents_received ON incidents (received_at_ms);
