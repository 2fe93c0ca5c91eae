-- A value sealed with the key of the first server that opened the store: a server
-- given another key (several servers share the database) is told so at its start,
-- instead of failing later on every sealed secret.
CREATE TABLE key_check (
    id     TEXT PRIMARY KEY,
    sealed TEXT NOT NULL
);
