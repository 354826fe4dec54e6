-- Rota schema 1 (PostgreSQL): jobs, queues, workers, in their own schema `rota` so they
-- never collide with an application's tables in the same database.
-- Times are bigint microseconds since the Unix epoch (as on SQLite, so the two backends map
-- rows alike); JSON columns are jsonb, so operators can query args and errors.

-- (The schema `rota` itself is created by the migration runner, before this file.)

CREATE TABLE rota.job (
    id               uuid     NOT NULL PRIMARY KEY,  -- UUIDv7: sorts by creation
    queue            text     NOT NULL,
    kind             text     NOT NULL,
    args             jsonb    NOT NULL,
    priority         smallint NOT NULL,
    state            text     NOT NULL,
    attempt          integer  NOT NULL,
    max_attempts     integer  NOT NULL,
    backoff          jsonb    NOT NULL,
    timeout_ms       bigint,
    unique_key       text,
    tags             jsonb    NOT NULL,
    progress         jsonb,
    result           jsonb,
    errors           jsonb    NOT NULL,
    lease_worker     text,
    lease_token      bigint   NOT NULL,
    lease_expires_at bigint,
    cancel_requested boolean  NOT NULL,
    run_at           bigint   NOT NULL,
    created_at       bigint   NOT NULL,
    attempted_at     bigint,
    finished_at      bigint
);

-- Claims walk this in order: priority, then run_at, then id.
CREATE INDEX job_ready ON rota.job (queue, priority, run_at, id) WHERE state = 'available';
-- The rescuer's scan for expired leases.
CREATE INDEX job_leased ON rota.job (lease_expires_at) WHERE state = 'running';
-- Unique-key lookups at enqueue.
CREATE INDEX job_unique ON rota.job (unique_key) WHERE unique_key IS NOT NULL;
-- The pruner, and finished-job listings.
CREATE INDEX job_finished ON rota.job (state, finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE rota.queue (
    name       text    NOT NULL PRIMARY KEY,
    config     jsonb   NOT NULL,
    paused     boolean NOT NULL,
    updated_at bigint  NOT NULL
);

-- A fresh install has the default queue.
INSERT INTO rota.queue (name, config, paused, updated_at) VALUES ('default', '{}', false, 0);

CREATE TABLE rota.worker (
    id         text   NOT NULL PRIMARY KEY,
    info       jsonb  NOT NULL,
    started_at bigint NOT NULL,
    last_seen  bigint NOT NULL
);

-- Enqueues with the same unique key take this row's lock first, so that two nodes never
-- both find the key free and both insert (a unique index cannot say "unfinished, or
-- finished less than unique_for ago").
CREATE TABLE rota.unique_lock (
    key text NOT NULL PRIMARY KEY
);
