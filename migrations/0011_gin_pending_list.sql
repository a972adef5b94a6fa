-- A bound on the pending list of the equality-key index (`resource_current.keys`).
--
-- GIN's fast update appends new entries to a pending list that every search of the index
-- scans whole until it is merged into the index proper (by the writer that overflows it, or by
-- vacuum). At the default limit (4 MB) a burst of writes, such as the AuditEvents of a stream
-- of reads, made each search by key read up to 4 MB more: 405 pending pages took a search by
-- patient from 1.4 to 2.5 ms. 256 kB keeps the batching of writes and bounds that cost.
--
-- The option cannot be set on a partitioned index, so it is set on each tenant's partition of
-- it, by this function: here for the tenants that exist, and by the store for each new one.
CREATE FUNCTION fjord_bound_gin_pending_lists() RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    partition regclass;
BEGIN
    FOR partition IN
        SELECT c.oid::regclass FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'resource_current_by_key'::regclass
          AND NOT coalesce(c.reloptions, '{}') @> ARRAY['gin_pending_list_limit=256']
    LOOP
        EXECUTE format('ALTER INDEX %s SET (gin_pending_list_limit = 256)', partition);
    END LOOP;
END $$;

SELECT fjord_bound_gin_pending_lists();
