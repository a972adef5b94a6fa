-- Finer statistics on the equality keys (`resource_current.keys`) of every tenant's partition.
--
-- A key is a hash of its resource type, parameter and value, so the rows holding a key are all of
-- one type; the planner cannot know that. At the default statistics target it estimates a key it
-- did not sample (a patient's, say) at half the rarest frequency it tracks: 361 rows where 20
-- match, in a partition of 244,000 rows mostly AuditEvents. With that estimate it ANDs the
-- bitmap of every row of the searched type (the `(tenant, type, last_updated)` index, 24,000
-- Observations) into the key's bitmap, and a search by patient took 5 ms instead of 1; 16
-- clients searched 612 times a second instead of 1,490. A target of 1,000 tracks ten times as
-- many keys (and samples the table 300,000 rows deep), which brought the estimate to 101 rows
-- and the plan to the key's index alone; its ANALYZE took 4 s on those 244,000 rows.
--
-- A partition created later does not take its parent's target, so this function sets it on
-- each tenant's partition, together with the bound of 0011 on its partition of the key index:
-- here for the tenants that exist, and by the store for each new one.
CREATE FUNCTION fjord_tune_key_index() RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    partition regclass;
BEGIN
    PERFORM fjord_bound_gin_pending_lists();
    FOR partition IN
        SELECT a.attrelid::regclass FROM pg_inherits i
        JOIN pg_attribute a ON a.attrelid = i.inhrelid AND a.attname = 'keys'
        WHERE i.inhparent = 'resource_current'::regclass AND a.attstattarget <> 1000
    LOOP
        EXECUTE format('ALTER TABLE %s ALTER COLUMN keys SET STATISTICS 1000', partition);
    END LOOP;
END $$;

SELECT fjord_tune_key_index();
