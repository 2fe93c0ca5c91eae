-- Web UI sessions. A session's cookie holds a random secret; only its SHA-256 is kept
-- (`hash`), with the user and the API token it was made from: a revoked token ends its
-- sessions. `seen_at` moves with use (the idle expiry); `expires_at` never does.
CREATE TABLE sessions (
    id          TEXT PRIMARY KEY,
    hash        TEXT NOT NULL UNIQUE,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_id    TEXT NOT NULL REFERENCES tokens (id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    seen_at     BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX sessions_user ON sessions (user_id);
