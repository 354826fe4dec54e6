-- The leadership lease row: maintenance (rescuer, pruner, scheduler) runs on the node that
-- holds it; taken over when it expires.
CREATE TABLE leader (
    name       TEXT    NOT NULL PRIMARY KEY,
    holder     TEXT    NOT NULL,
    elected_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
