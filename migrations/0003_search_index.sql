-- Search index (see `fjord-search`'s `terms` module). Values that searches compare for equality
-- are 64-bit keys in one array on the current row (`keys`, one GIN index): a write adds no rows
-- for them. Dates and strings, which searches compare by order, get rows of their own; numbers,
-- quantities, token texts and composites with an ordered part are JSON beside the keys (`vals`),
-- checked on the rows the other criteria find. A deleted resource has no terms.
--
-- Rows written before this migration have no terms until they are reindexed.

ALTER TABLE resource_current
    ADD COLUMN resource_key bigint,
    ADD COLUMN keys bigint[],
    ADD COLUMN vals jsonb;
CREATE INDEX resource_current_by_key ON resource_current USING gin (keys);
-- Type listings sorted by `_lastUpdated` (work lists) and unfiltered type searches.
CREATE INDEX resource_current_by_updated ON resource_current (tenant, type, last_updated);

-- Dates as UTC milliseconds since 1970, [low, high] inclusive.
CREATE TABLE search_date (
    tenant integer NOT NULL, type text NOT NULL, id text NOT NULL, resource_key bigint NOT NULL,
    param_key bigint NOT NULL, low bigint NOT NULL, high bigint NOT NULL
) PARTITION BY LIST (tenant);
CREATE INDEX search_date_by_low ON search_date (tenant, param_key, low);
CREATE INDEX search_date_by_resource ON search_date (tenant, resource_key);

-- Strings lowercased without accents (`normalized`, the default prefix match) and as written.
CREATE TABLE search_string (
    tenant integer NOT NULL, type text NOT NULL, id text NOT NULL, resource_key bigint NOT NULL,
    param_key bigint NOT NULL, normalized text NOT NULL, exact text NOT NULL
) PARTITION BY LIST (tenant);
CREATE INDEX search_string_by_prefix ON search_string (tenant, param_key, normalized text_pattern_ops);
CREATE INDEX search_string_by_resource ON search_string (tenant, resource_key);

DO $$
DECLARE
    t text;
    k integer;
BEGIN
    FOREACH t IN ARRAY ARRAY['search_date', 'search_string'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_wall ON %I USING (tenant = fjord_current_tenant()) '
                       'WITH CHECK (tenant = fjord_current_tenant())', t);
        FOR k IN SELECT key FROM tenant LOOP
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES IN (%s)', t || '_' || k, t, k);
        END LOOP;
    END LOOP;
END $$;

-- Where the next page of a search starts: the sort keys of the last row served, under a random
-- token that the page links carry instead of the keys themselves (they may be names or dates).
-- Kept a day.
CREATE TABLE search_cursor (
    tenant     integer     NOT NULL,
    token      text        NOT NULL,
    after      text[]      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, token)
);
CREATE INDEX search_cursor_by_age ON search_cursor (tenant, created_at);
ALTER TABLE search_cursor ENABLE ROW LEVEL SECURITY;
ALTER TABLE search_cursor FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_wall ON search_cursor
    USING (tenant = fjord_current_tenant()) WITH CHECK (tenant = fjord_current_tenant());
