-- Rota schema 8: each job keeps its latest state changes, for the dashboard's timeline: a
-- text log, one line per change, appended in the same write as the change and cut to its
-- last 2,000 bytes (see rota_store::StateChange). Jobs stored before have none.

ALTER TABLE job ADD COLUMN history TEXT NOT NULL DEFAULT '';
