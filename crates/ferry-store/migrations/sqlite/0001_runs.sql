-- Ferry's first schema: repositories, runs, jobs, steps, log index.
-- Portable SQL: runs on SQLite and PostgreSQL. Times are milliseconds since the epoch,
-- ids are UUIDv7 text, booleans are 0/1 integers.

CREATE TABLE repositories (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    url            TEXT NOT NULL UNIQUE,
    default_branch TEXT,
    created_at     BIGINT NOT NULL
);

CREATE TABLE runs (
    id            TEXT PRIMARY KEY,
    repository_id TEXT NOT NULL REFERENCES repositories (id),
    number        BIGINT NOT NULL,
    event         TEXT NOT NULL,
    git_ref       TEXT NOT NULL,
    branch        TEXT,
    tag           TEXT,
    commit_sha    TEXT NOT NULL,
    dirty         INTEGER NOT NULL DEFAULT 0,
    author        TEXT NOT NULL DEFAULT '',
    message       TEXT NOT NULL DEFAULT '',
    status        TEXT NOT NULL,
    plan          TEXT NOT NULL,
    error         TEXT,
    created_at    BIGINT NOT NULL,
    started_at    BIGINT,
    finished_at   BIGINT,
    UNIQUE (repository_id, number)
);

CREATE TABLE jobs (
    id            TEXT PRIMARY KEY,
    run_id        TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    position      INTEGER NOT NULL,
    name          TEXT NOT NULL,
    status        TEXT NOT NULL,
    reason        TEXT,
    exit_code     INTEGER,
    attempts      INTEGER NOT NULL DEFAULT 0,
    allow_failure INTEGER NOT NULL DEFAULT 0,
    started_at    BIGINT,
    finished_at   BIGINT,
    log_bytes     BIGINT NOT NULL DEFAULT 0,
    log_lines     BIGINT NOT NULL DEFAULT 0,
    tests_passed  INTEGER,
    tests_failed  INTEGER,
    tests_skipped INTEGER,
    test_failures TEXT,
    UNIQUE (run_id, name)
);

CREATE TABLE steps (
    job_id      TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL,
    exit_code   INTEGER,
    attempt     INTEGER NOT NULL DEFAULT 1,
    started_at  BIGINT,
    finished_at BIGINT,
    PRIMARY KEY (job_id, position)
);

-- A job's log is a file in the data directory; this index gives each chunk of it the
-- time it was read, so every line has a timestamp without a row per line.
CREATE TABLE log_chunks (
    job_id      TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    byte_offset BIGINT NOT NULL,
    first_line  BIGINT NOT NULL,
    ts          BIGINT NOT NULL,
    PRIMARY KEY (job_id, byte_offset)
);
