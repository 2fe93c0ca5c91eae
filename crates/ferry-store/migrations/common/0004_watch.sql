-- Polling remembers the heads it has seen; schedules remember when they last fired,
-- so that a restart neither misses nor repeats a start.
CREATE TABLE repo_heads (
    repository_id TEXT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    git_ref       TEXT NOT NULL,
    sha           TEXT NOT NULL,
    PRIMARY KEY (repository_id, git_ref)
);

CREATE TABLE schedules (
    repository_id TEXT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    expression    TEXT NOT NULL,
    last_fired    BIGINT NOT NULL,
    PRIMARY KEY (repository_id, expression)
);
