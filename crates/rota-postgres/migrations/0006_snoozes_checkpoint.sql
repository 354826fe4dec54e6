-- Rota schema 6: snoozes are counted (a job may snooze only so often), and a handler's
-- checkpoint is kept for its next attempt.
ALTER TABLE rota.job ADD COLUMN snoozes integer NOT NULL DEFAULT 0;
ALTER TABLE rota.job ADD COLUMN snooze_log jsonb NOT NULL DEFAULT '[]';
ALTER TABLE rota.job ADD COLUMN checkpoint jsonb;
