-- Which database this is, for state kept outside it (the text index): a random id made here,
-- with the database's oid, so a copy of a database (a template) is another instance.
CREATE TABLE instance (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    id        uuid    NOT NULL DEFAULT gen_random_uuid()
);
INSERT INTO instance DEFAULT VALUES;

-- A page token belongs to one search (`query_key`, a hash of its filters and sort) and knows
-- the token of the page before it (`previous`, NULL when that is the first page).
DELETE FROM search_cursor;
ALTER TABLE search_cursor
    ADD COLUMN query_key bigint NOT NULL,
    ADD COLUMN previous text;
