-- The statistics target of the equality keys back to 1,000 (0012), from 0013's 250.
--
-- At 250, fjord-peers' search by patient (after its write and read scenarios, about 120,000
-- AuditEvents) fell back to the plan that ANDs every Observation of the tenant into the key's
-- bitmap: 405 searches a second, against 1,382 and 1,604 in two runs at 1,000. The hand check
-- that chose 250 had fewer AuditEvents. 1,000 costs `fjord import` about 13% (ANALYZE of a
-- growing table samples 300,000 rows); a plan that does not hang on the estimate is the fix
-- still to make.
CREATE OR REPLACE FUNCTION fjord_tune_key_index() RETURNS void
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
