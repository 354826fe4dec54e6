-- Rota schema 3: job counts kept by triggers, so health, metrics and the doctor read a few
-- rows instead of scanning jobs; waiting jobs indexed per queue.

CREATE TABLE job_count (
    queue TEXT    NOT NULL,
    kind  TEXT    NOT NULL,
    state TEXT    NOT NULL,
    n     INTEGER NOT NULL,
    PRIMARY KEY (queue, kind, state)
) WITHOUT ROWID;

INSERT INTO job_count (queue, kind, state, n)
    SELECT queue, kind, state, count(*) FROM job GROUP BY queue, kind, state;

CREATE TRIGGER job_count_insert AFTER INSERT ON job BEGIN
    INSERT OR IGNORE INTO job_count (queue, kind, state, n) VALUES (new.queue, new.kind, new.state, 0);
    UPDATE job_count SET n = n + 1 WHERE queue = new.queue AND kind = new.kind AND state = new.state;
END;

CREATE TRIGGER job_count_delete AFTER DELETE ON job BEGIN
    UPDATE job_count SET n = n - 1 WHERE queue = old.queue AND kind = old.kind AND state = old.state;
END;

CREATE TRIGGER job_count_update AFTER UPDATE OF state ON job WHEN old.state <> new.state BEGIN
    UPDATE job_count SET n = n - 1 WHERE queue = old.queue AND kind = old.kind AND state = old.state;
    INSERT OR IGNORE INTO job_count (queue, kind, state, n) VALUES (new.queue, new.kind, new.state, 0);
    UPDATE job_count SET n = n + 1 WHERE queue = new.queue AND kind = new.kind AND state = new.state;
END;

-- Promotion, the next due time and the oldest ready age are asked per queue.
DROP INDEX job_waiting;
CREATE INDEX job_waiting ON job (queue, run_at) WHERE state IN ('scheduled', 'retryable');
