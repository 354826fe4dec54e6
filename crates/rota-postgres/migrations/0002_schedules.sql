-- Rota schema 2: cron schedules, and the schedule slot a job came from.

ALTER TABLE rota.job ADD COLUMN schedule text;
ALTER TABLE rota.job ADD COLUMN slot bigint;

CREATE TABLE rota.schedule (
    name       text   NOT NULL PRIMARY KEY,
    definition jsonb  NOT NULL,  -- rota_core::schedule::ScheduleDef
    last_slot  bigint NOT NULL,  -- slots at or before this are done (fired, recovered or skipped)
    fired      bigint NOT NULL,  -- slots enqueued on time
    missed     bigint NOT NULL,  -- slots that passed while no scheduler ran
    recovered  bigint NOT NULL,  -- missed slots enqueued late, per the misfire policy
    last_job   uuid,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL
);
