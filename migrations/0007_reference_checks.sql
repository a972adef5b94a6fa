-- Referential integrity without row locks on the resources referred to.
--
-- A writer takes a shared advisory lock per resource it refers to and only then looks for
-- them; a delete takes the exclusive lock on its resource and only then looks for referrers.
-- Each look is a statement of its own, inside a volatile function, so its snapshot is taken
-- after the lock is held: a writer and a delete racing over one resource cannot both succeed.
-- Row locks (`FOR KEY SHARE`) would do the same, but every writer referring to one popular
-- resource (the patient of a stream of measurements) would rewrite that row's lockers.

-- The lock of the resource `type/id` in a tenant (the two-key form: apart from conditions').
CREATE FUNCTION fjord_reference_lock_key(type text, id text) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN hashtext(type || '/' || id);

-- Which of the resources (types[i], ids[i]) are current, after taking their shared locks.
-- One primary-key lookup per resource: a plan that joins them to the table, once cached while
-- the table was small, can read the whole tenant per write.
CREATE FUNCTION fjord_current_targets(tenant integer, types text[], ids text[])
    RETURNS TABLE (type text, id text)
    LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    lock_key integer;
BEGIN
    -- In key order: two writers locking the same resources cannot deadlock.
    FOREACH lock_key IN ARRAY (
        SELECT array_agg(DISTINCT fjord_reference_lock_key(u.type, u.id))
        FROM unnest(types, ids) AS u(type, id)
    ) LOOP
        PERFORM pg_advisory_xact_lock_shared(tenant, lock_key);
    END LOOP;
    FOR i IN 1 .. coalesce(array_length(types, 1), 0) LOOP
        PERFORM FROM resource_current c
        WHERE c.tenant = fjord_current_targets.tenant
          AND c.type = types[i] AND c.id = ids[i] AND NOT c.deleted;
        IF FOUND THEN
            type := types[i];
            id := ids[i];
            RETURN NEXT;
        END IF;
    END LOOP;
END
$$;
