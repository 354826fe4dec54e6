-- Rota schema 5: a job keeps its unique key taken for `unique_for` after it finished, and
-- is kept (not pruned) until then.
ALTER TABLE rota.job ADD COLUMN unique_for_ms bigint;
