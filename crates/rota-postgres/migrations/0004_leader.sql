-- Rota schema 4: the leadership lease row: maintenance (rescuer, pruner, scheduler) runs on
-- the node that holds it; taken over when it expires.
CREATE TABLE rota.leader (
    name       text   NOT NULL PRIMARY KEY,
    holder     text   NOT NULL,
    elected_at bigint NOT NULL,
    expires_at bigint NOT NULL
);
