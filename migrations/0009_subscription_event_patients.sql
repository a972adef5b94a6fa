-- The patients an event's resource belongs to (`Patient/id`, by R4's Patient compartment), found
-- by the dispatcher from the version it matched: the AuditEvent of a notification names them
-- without reading the version again.
ALTER TABLE subscription_event ADD COLUMN patients text[] NOT NULL DEFAULT '{}';
