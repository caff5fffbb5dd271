-- L3: how each webhook notification of an escalation ended (one row per webhook and
-- event). Never edit a landed migration: add a new one.

CREATE TABLE notifications (
    id             TEXT    PRIMARY KEY,
    escalation_id  TEXT    NOT NULL,
    tenant         TEXT    NOT NULL,
    -- The webhook's configured name; never its URL (a Slack webhook URL is a secret).
    webhook        TEXT    NOT NULL,
    -- escalation.opened | escalation.decided | escalation.breached
    event          TEXT    NOT NULL,
    -- delivered | failed | dropped
    status         TEXT    NOT NULL,
    attempts       BIGINT  NOT NULL,
    -- A status code or an error kind; empty when delivered.
    last_error     TEXT    NOT NULL DEFAULT '',
    at_ms          BIGINT  NOT NULL
);

CREATE INDEX notifications_escalation ON notifications (tenant, escalation_id, at_ms);
