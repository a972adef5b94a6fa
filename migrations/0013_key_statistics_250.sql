-- The statistics target of the equality keys lowered from 1,000 (0012) to 250.
--
-- Measured on 2026-12-05 with the partition of 0012's example (156,000 rows, 137,000 of them
-- AuditEvents): at 250 the planner estimated a patient's key at 104 rows (94 match) and used
-- the key's index alone, as at 1,000; 16 clients searched by patient 1,011 times a second at
-- 250, 990 at 1,000 and 632 at the default 100. But ANALYZE samples 300 rows per unit of target,
-- and autovacuum analyses a growing table often: `fjord import` of a million resources into a
-- new tenant ran at 7,990–8,671/s at 1,000, against 9,641–9,729/s at 250 and 9,286–9,794/s at
-- the default.
CREATE OR REPLACE FUNCTION fjord_tune_key_index() RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    partition regclass;
BEGIN
    PERFORM fjord_bound_gin_pending_lists();
    FOR partition IN
        SELECT a.attrelid::regclass FROM pg_inherits i
        JOIN pg_attribute a ON a.attrelid = i.inhrelid AND a.attname = 'keys'
        WHERE i.inhparent = 'resource_current'::regclass AND a.attstattarget <> 250
    LOOP
        EXECUTE format('ALTER TABLE %s ALTER COLUMN keys SET STATISTICS 250', partition);
    END LOOP;
END $$;

SELECT fjord_tune_key_index();
