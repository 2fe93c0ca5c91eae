-- Webhook deliveries accepted but not yet turned into runs: the webhook answers at
-- once, a background worker fetches and plans (one fetch for many deliveries).
CREATE TABLE intake (
    id            TEXT PRIMARY KEY,
    repository_id TEXT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    provider      TEXT NOT NULL,
    delivery_id   TEXT,
    event         TEXT NOT NULL,
    git_ref       TEXT NOT NULL,
    sha           TEXT NOT NULL,
    received_at   BIGINT NOT NULL
);

-- What became of a delivery: a run id, or why none was started.
ALTER TABLE deliveries ADD COLUMN outcome TEXT;
