-- Fjord storage: tenants (one per hospital trust), immutable resource versions, the current-version
-- pointer and the change log. Every tenant-scoped table is LIST-partitioned by tenant (a partition per
-- tenant, created with the tenant) and carries a row-level security policy as a second wall behind
-- the application's own tenant filter.

CREATE TABLE tenant (
    id         text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    key        integer GENERATED ALWAYS AS IDENTITY UNIQUE,
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Every version of every resource; a delete is a version without body.
CREATE TABLE resource_version (
    tenant       integer     NOT NULL,
    type         text        NOT NULL,
    id           text        NOT NULL,
    version      bigint      NOT NULL,
    last_updated timestamptz NOT NULL,
    op           text        NOT NULL CHECK (op IN ('create', 'update', 'delete')),
    body         text,
    PRIMARY KEY (tenant, type, id, version)
) PARTITION BY LIST (tenant);

-- One row per logical resource: which version is current. Writers serialise on this row.
CREATE TABLE resource_current (
    tenant       integer     NOT NULL,
    type         text        NOT NULL,
    id           text        NOT NULL,
    version      bigint      NOT NULL,
    last_updated timestamptz NOT NULL,
    deleted      boolean     NOT NULL,
    PRIMARY KEY (tenant, type, id)
) PARTITION BY LIST (tenant);

-- One row per change, numbered by the tenant's own sequence (change_seq_<key>).
CREATE TABLE change_log (
    tenant       integer     NOT NULL,
    seq          bigint      NOT NULL,
    type         text        NOT NULL,
    id           text        NOT NULL,
    version      bigint      NOT NULL,
    last_updated timestamptz NOT NULL,
    PRIMARY KEY (tenant, seq)
) PARTITION BY LIST (tenant);
CREATE INDEX change_log_by_type ON change_log (tenant, type, seq);

ALTER TABLE resource_version ENABLE ROW LEVEL SECURITY;
ALTER TABLE resource_version FORCE ROW LEVEL SECURITY;
ALTER TABLE resource_current ENABLE ROW LEVEL SECURITY;
ALTER TABLE resource_current FORCE ROW LEVEL SECURITY;
ALTER TABLE change_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE change_log FORCE ROW LEVEL SECURITY;

-- The tenant a session may touch is its setting `fjord.tenant`, given when the connection is opened
-- (each tenant has its own connection pool); unset, nothing.
CREATE FUNCTION fjord_current_tenant() RETURNS integer LANGUAGE sql STABLE AS
$$ SELECT NULLIF(current_setting('fjord.tenant', true), '')::integer $$;

CREATE POLICY tenant_wall ON resource_version
    USING (tenant = fjord_current_tenant()) WITH CHECK (tenant = fjord_current_tenant());
CREATE POLICY tenant_wall ON resource_current
    USING (tenant = fjord_current_tenant()) WITH CHECK (tenant = fjord_current_tenant());
CREATE POLICY tenant_wall ON change_log
    USING (tenant = fjord_current_tenant()) WITH CHECK (tenant = fjord_current_tenant());

-- Writes a new version atomically: the version row, the current pointer and the change-log row.
-- `p_expected` NULL means the resource must not exist yet; otherwise the current version must equal
-- it. Returns false, writing nothing, when that expectation does not hold.
CREATE FUNCTION fjord_write_version(
    p_tenant integer, p_type text, p_id text, p_expected bigint, p_version bigint,
    p_last_updated timestamptz, p_op text, p_body text
) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF p_expected IS NULL THEN
        INSERT INTO resource_current (tenant, type, id, version, last_updated, deleted)
        VALUES (p_tenant, p_type, p_id, p_version, p_last_updated, p_op = 'delete')
        ON CONFLICT DO NOTHING;
    ELSE
        UPDATE resource_current
        SET version = p_version, last_updated = p_last_updated, deleted = (p_op = 'delete')
        WHERE tenant = p_tenant AND type = p_type AND id = p_id AND version = p_expected;
    END IF;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO resource_version (tenant, type, id, version, last_updated, op, body)
    VALUES (p_tenant, p_type, p_id, p_version, p_last_updated, p_op, p_body);
    INSERT INTO change_log (tenant, seq, type, id, version, last_updated)
    VALUES (p_tenant, nextval(format('change_seq_%s', p_tenant)::regclass), p_type, p_id, p_version,
            p_last_updated);
    RETURN true;
END $$;
