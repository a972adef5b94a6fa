-- Per-tenant settings (mandatory If-Match, referential integrity, cascading and multiple
-- conditional deletes), as JSON whose absent keys take Fjord's defaults: a setting added later
-- needs no migration.
ALTER TABLE tenant ADD COLUMN settings jsonb NOT NULL DEFAULT '{}';
