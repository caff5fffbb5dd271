-- Every NATS user the control plane minted for a host's agent (at each enrollment), and
-- when it was revoked: a host that enrolls again (a rebuilt machine, a new token) gets a
-- new user, and every earlier user of that host is revoked at that moment, so a lost or
-- stolen data directory's credentials stop reaching the bus. The control plane (when it
-- is the NATS operator) signs the fleet account again with every revoked user and pushes
-- it to the NATS server.
-- Never edit a landed migration: add a new one.
CREATE TABLE bus_users (
    public_key    TEXT    PRIMARY KEY,
    host_id       TEXT    NOT NULL,
    tenant        TEXT    NOT NULL,
    issued_at_ms  BIGINT  NOT NULL,
    revoked_at_ms BIGINT
);

CREATE INDEX bus_users_host ON bus_users (host_id);
CREATE INDEX bus_users_revoked ON bus_users (revoked_at_ms) WHERE revoked_at_ms IS NOT NULL;
