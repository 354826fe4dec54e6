-- Rota schema 7: flow control. A job may carry a concurrency key ('' when it has none);
-- claims walk the ready jobs key by key (round-robin), so the ready index leads with the
-- key; the oldest ready job of a queue has its own index; running jobs are counted per key
-- by a seek; rate buckets keep one instant each (their theoretical arrival time).
ALTER TABLE rota.job ADD COLUMN concurrency_key text COLLATE "C" NOT NULL DEFAULT '';

DROP INDEX rota.job_ready;
CREATE INDEX job_ready ON rota.job (queue, concurrency_key, priority, run_at, id) WHERE state = 'available';
CREATE INDEX job_ready_age ON rota.job (queue, run_at) WHERE state = 'available';
CREATE INDEX job_running_key ON rota.job (queue, concurrency_key) WHERE state = 'running' AND concurrency_key <> '';

CREATE TABLE rota.rate_bucket (
    queue text    NOT NULL,
    scope text    NOT NULL,  -- queue, kind or key
    name  text    NOT NULL,  -- the kind or key ('' for the queue)
    tat   bigint NOT NULL,  -- theoretical arrival time, microseconds
    PRIMARY KEY (queue, scope, name)
);

-- Debounce and throttle keys: which job holds each, since when, until when.
CREATE TABLE rota.enqueue_collapse (
    scope    text   NOT NULL,  -- debounce or throttle
    key      text   NOT NULL,
    job      uuid   NOT NULL,
    first_at bigint NOT NULL,
    until    bigint NOT NULL,
    PRIMARY KEY (scope, key)
);
