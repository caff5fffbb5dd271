-- Every key a host has enrolled with, kept after it enrolled again with another (a
-- rebuilt machine, a lost data directory): each key signs a log of its own, named
-- `runwarden/KEY_NAME`, and the logs of earlier keys stay the host's evidence (a tenant's
-- export holds them all). The control plane names the keys: a host's first is named
-- after the host, later ones `HOST~2`, `HOST~3`, … (`~` is not allowed in host ids, so
-- no host's log can take another's name). `hosts` holds the current key.
-- Never edit a landed migration: add a new one.
CREATE TABLE host_keys (
    key_name       TEXT    PRIMARY KEY,
    host_id        TEXT    NOT NULL,
    tenant         TEXT    NOT NULL,
    -- One key signs for one host.
    public_key     BYTEA    NOT NULL UNIQUE,
    enrolled_at_ms BIGINT NOT NULL
);

CREATE INDEX host_keys_host ON host_keys (host_id, enrolled_at_ms);

INSERT INTO host_keys (key_name, host_id, tenant, public_key, enrolled_at_ms)
    SELECT key_name, id, tenant, public_key, enrolled_at_ms FROM hosts ON CONFLICT DO NOTHING;
