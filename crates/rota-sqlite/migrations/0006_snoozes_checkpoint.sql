-- Rota schema 6: snoozes are counted (a job may snooze only so often), and a handler's
-- checkpoint is kept for its next attempt.
ALTER TABLE job ADD COLUMN snoozes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE job ADD COLUMN snooze_log TEXT NOT NULL DEFAULT '[]';
ALTER TABLE job ADD COLUMN checkpoint TEXT;
