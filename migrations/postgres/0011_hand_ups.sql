-- An agent's own control plane hands up what it cannot finish at L1 (status
-- 'handed-up'); the fleet's control plane took the ones listed here. What is not listed
-- waits on the host until the link is back.
-- Never edit a landed migration: add a new one.
CREATE TABLE hand_ups_sent (
    incident_id TEXT    PRIMARY KEY,
    sent_at_ms  BIGINT NOT NULL
);

CREATE INDEX incidents_handed_up ON incidents (received_at_ms) WHERE status = 'handed-up';
