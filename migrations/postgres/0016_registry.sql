-- The control plane's component registry (issue #15): each tenant's trust policy, the
-- components published, by SHA-256, and which tenant published which under which release.
-- Never edit a landed migration: add a new one.
CREATE TABLE trust_policies (
    tenant        TEXT    PRIMARY KEY,
    -- The policy as JSON (publishers, minimum versions).
    policy        TEXT    NOT NULL,
    updated_at_ms BIGINT  NOT NULL,
    updated_by    TEXT    NOT NULL
);

CREATE TABLE components (
    sha256 TEXT    PRIMARY KEY,
    bytes  BYTEA   NOT NULL,
    size   BIGINT  NOT NULL
);

CREATE TABLE releases (
    tenant          TEXT    NOT NULL,
    sha256          TEXT    NOT NULL REFERENCES components (sha256),
    kind            TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    version         TEXT    NOT NULL,
    risk            TEXT    NOT NULL,
    -- The publisher's key, as text (`name+keyid+base64`).
    publisher       TEXT    NOT NULL,
    -- The signed release, the DSSE envelope as published.
    envelope        TEXT    NOT NULL,
    published_at_ms BIGINT  NOT NULL,
    published_by    TEXT    NOT NULL,
    PRIMARY KEY (tenant, sha256)
);

CREATE INDEX releases_name ON releases (tenant, name, published_at_ms);
