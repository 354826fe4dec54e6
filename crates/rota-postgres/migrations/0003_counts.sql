-- Rota schema 3: job counts per queue, kind and state, so health, metrics and the doctor
-- read a few rows instead of scanning jobs.
--
-- On PostgreSQL many transactions from many nodes change counts at once: updating one
-- counter row in each would make them wait for each other's commit. So each write appends
-- its deltas to `job_count_delta` (no row is shared), readers add the deltas to
-- `job_count`, and a fold moves the deltas into `job_count` every second.

CREATE TABLE rota.job_count (
    queue text   NOT NULL,
    kind  text   NOT NULL,
    state text   NOT NULL,
    n     bigint NOT NULL,
    PRIMARY KEY (queue, kind, state)
);

CREATE TABLE rota.job_count_delta (
    queue text   NOT NULL,
    kind  text   NOT NULL,
    state text   NOT NULL,
    n     bigint NOT NULL
);

INSERT INTO rota.job_count (queue, kind, state, n)
    SELECT queue, kind, state, count(*) FROM rota.job GROUP BY queue, kind, state;

-- Promotion, the next due time and the oldest ready age are asked per queue.
CREATE INDEX job_waiting ON rota.job (queue, run_at) WHERE state IN ('scheduled', 'retryable');
