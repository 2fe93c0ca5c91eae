-- ferry serve: users and API tokens, repositories a server watches, and queue leases.

CREATE TABLE users (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    role       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Tokens are stored only as SHA-256 hashes of the random token.
CREATE TABLE tokens (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    hash         TEXT NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);

ALTER TABLE repositories ADD COLUMN webhook_secret TEXT;
ALTER TABLE repositories ADD COLUMN poll_interval_s BIGINT;

-- Who or what asked for the run, and which server process holds it while it runs.
ALTER TABLE runs ADD COLUMN triggered_by TEXT;
ALTER TABLE runs ADD COLUMN lease_owner TEXT;
ALTER TABLE runs ADD COLUMN lease_until BIGINT;

CREATE INDEX runs_status ON runs (status, created_at);
