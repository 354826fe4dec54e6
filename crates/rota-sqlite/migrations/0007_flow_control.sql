-- Rota schema 7: flow control. A job may carry a concurrency key ('' when it has none);
-- claims walk the ready jobs key by key (round-robin), so the ready index leads with the
-- key; the oldest ready job of a queue has its own index; running jobs are counted per key
-- by a seek; rate buckets keep one instant each (their theoretical arrival time).
ALTER TABLE job ADD COLUMN concurrency_key TEXT NOT NULL DEFAULT '';

DROP INDEX job_ready;
CREATE INDEX job_ready ON job (queue, concurrency_key, priority, run_at, id) WHERE state = 'available';
CREATE INDEX job_ready_age ON job (queue, run_at) WHERE state = 'available';
CREATE INDEX job_running_key ON job (queue, concurrency_key) WHERE state = 'running' AND concurrency_key <> '';

CREATE TABLE rate_bucket (
    queue TEXT    NOT NULL,
    scope TEXT    NOT NULL,  -- queue, kind or key
    name  TEXT    NOT NULL,  -- the kind or key ('' for the queue)
    tat   INTEGER NOT NULL,  -- theoretical arrival time, microseconds
    PRIMARY KEY (queue, scope, name)
) WITHOUT ROWID;

-- Debounce and throttle keys: which job holds each, since when, until when.
CREATE TABLE enqueue_collapse (
    scope    TEXT    NOT NULL,  -- debounce or throttle
    key      TEXT    NOT NULL,
    job      BLOB    NOT NULL,
    first_at INTEGER NOT NULL,
    until    INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;
