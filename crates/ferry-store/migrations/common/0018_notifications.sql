-- Notifications: one row per event and channel, written when the event happens and
-- sent (and retried with back-off) by the server's notifier; each attempt is kept.
CREATE TABLE notifications (
    id TEXT PRIMARY KEY,
    repository_id TEXT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    event TEXT NOT NULL,
    channel TEXT NOT NULL,
    target TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    finished_at BIGINT,
    last_error TEXT
);
CREATE INDEX notifications_due ON notifications (status, next_at);
CREATE INDEX notifications_by_repository ON notifications (repository_id, created_at);
CREATE TABLE notification_attempts (
    notification_id TEXT NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    attempt BIGINT NOT NULL,
    at BIGINT NOT NULL,
    ok BIGINT NOT NULL,
    detail TEXT NOT NULL,
    ms BIGINT NOT NULL,
    PRIMARY KEY (notification_id, attempt)
);
