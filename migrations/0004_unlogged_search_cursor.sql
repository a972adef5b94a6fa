-- Page tokens need no durability: after a crash a client runs its search again. Unlogged, a
-- search that hands out a `next` link writes no WAL and so waits for no flush at commit.
ALTER TABLE search_cursor SET UNLOGGED;
