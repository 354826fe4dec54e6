-- Rota schema 1: jobs, queues, workers.
-- Times are INTEGER microseconds since the Unix epoch; JSON columns are TEXT.

CREATE TABLE job (
    id               BLOB    NOT NULL PRIMARY KEY,  -- UUIDv7, 16 bytes: sorts by creation
    queue            TEXT    NOT NULL,
    kind             TEXT    NOT NULL,
    args             TEXT    NOT NULL,
    priority         INTEGER NOT NULL,
    state            TEXT    NOT NULL,
    attempt          INTEGER NOT NULL,
    max_attempts     INTEGER NOT NULL,
    backoff          TEXT    NOT NULL,
    timeout_ms       INTEGER,
    unique_key       TEXT,
    tags             TEXT    NOT NULL,
    progress         TEXT,
    result           TEXT,
    errors           TEXT    NOT NULL,
    lease_worker     TEXT,
    lease_token      INTEGER NOT NULL,
    lease_expires_at INTEGER,
    cancel_requested INTEGER NOT NULL,
    run_at           INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    attempted_at     INTEGER,
    finished_at      INTEGER
) WITHOUT ROWID;

-- Claims walk this in order: priority, then run_at, then id.
CREATE INDEX job_ready ON job (queue, priority, run_at, id) WHERE state = 'available';
-- Promotion of scheduled and retryable jobs whose time has come.
CREATE INDEX job_waiting ON job (run_at) WHERE state IN ('scheduled', 'retryable');
-- The rescuer's scan for expired leases.
CREATE INDEX job_leased ON job (lease_expires_at) WHERE state = 'running';
-- Unique-key lookups at enqueue.
CREATE INDEX job_unique ON job (unique_key) WHERE unique_key IS NOT NULL;
-- The pruner, and finished-job listings.
CREATE INDEX job_finished ON job (state, finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE queue (
    name       TEXT    NOT NULL PRIMARY KEY,
    config     TEXT    NOT NULL,
    paused     INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- A fresh install has the default queue.
INSERT INTO queue (name, config, paused, updated_at) VALUES ('default', '{}', 0, 0);

CREATE TABLE worker (
    id         TEXT    NOT NULL PRIMARY KEY,
    info       TEXT    NOT NULL,
    started_at INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL
);
