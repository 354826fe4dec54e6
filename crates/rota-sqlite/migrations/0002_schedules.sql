-- Rota schema 2: cron schedules, and the schedule slot a job came from.

ALTER TABLE job ADD COLUMN schedule TEXT;
ALTER TABLE job ADD COLUMN slot INTEGER;

CREATE TABLE schedule (
    name       TEXT    NOT NULL PRIMARY KEY,
    definition TEXT    NOT NULL,  -- rota_core::schedule::ScheduleDef as JSON
    last_slot  INTEGER NOT NULL,  -- slots at or before this are done (fired, recovered or skipped)
    fired      INTEGER NOT NULL,  -- slots enqueued on time
    missed     INTEGER NOT NULL,  -- slots that passed while no scheduler ran
    recovered  INTEGER NOT NULL,  -- missed slots enqueued late, per the misfire policy
    last_job   BLOB,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
