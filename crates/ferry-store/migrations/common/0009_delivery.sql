-- Delivery: sealed releases, deployments to environments, approvals, per-environment
-- variables and sealed secrets, groups of approvers, and the audit log.

CREATE TABLE releases (
    id             TEXT PRIMARY KEY,
    repository_id  TEXT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    run_id         TEXT NOT NULL REFERENCES runs (id),
    run_number     BIGINT NOT NULL,
    commit_sha     TEXT NOT NULL,
    git_ref        TEXT NOT NULL,
    tag            TEXT,
    author         TEXT NOT NULL,
    triggered_by   TEXT,
    plan_hash      TEXT NOT NULL,
    ferry_version  TEXT NOT NULL,
    delivery       TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    UNIQUE (repository_id, name),
    UNIQUE (run_id)
);

CREATE TABLE release_artifacts (
    release_id TEXT NOT NULL REFERENCES releases (id) ON DELETE CASCADE,
    path       TEXT NOT NULL,
    job        TEXT NOT NULL,
    digest     TEXT NOT NULL,
    size       BIGINT NOT NULL,
    mode       BIGINT NOT NULL,
    PRIMARY KEY (release_id, path)
);

CREATE TABLE release_images (
    release_id TEXT NOT NULL REFERENCES releases (id) ON DELETE CASCADE,
    job        TEXT NOT NULL,
    name       TEXT NOT NULL,
    digest     TEXT NOT NULL,
    PRIMARY KEY (release_id, job)
);

CREATE TABLE deployments (
    id                  TEXT PRIMARY KEY,
    repository_id       TEXT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    environment         TEXT NOT NULL,
    number              BIGINT NOT NULL,
    release_id          TEXT NOT NULL REFERENCES releases (id),
    kind                TEXT NOT NULL,
    status              TEXT NOT NULL,
    reason              TEXT,
    requested_by        TEXT,
    previous_release_id TEXT,
    config              TEXT,
    created_at          BIGINT NOT NULL,
    started_at          BIGINT,
    finished_at         BIGINT,
    UNIQUE (repository_id, environment, number)
);
CREATE INDEX deployments_env ON deployments (repository_id, environment, status);
-- At most one deployment of an environment is in progress, whatever the servers do.
CREATE UNIQUE INDEX deployments_one_active ON deployments (repository_id, environment)
    WHERE status IN ('deploying', 'verifying');
-- At most one release is live in an environment.
CREATE UNIQUE INDEX deployments_one_live ON deployments (repository_id, environment)
    WHERE status = 'live';

CREATE TABLE approvals (
    deployment_id TEXT NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    user_id       TEXT NOT NULL,
    user_name     TEXT NOT NULL,
    decision      TEXT NOT NULL,
    comment       TEXT,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (deployment_id, user_id)
);

CREATE TABLE variables (
    repository_id TEXT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    environment   TEXT NOT NULL,
    name          TEXT NOT NULL,
    value         TEXT NOT NULL,
    updated_at    BIGINT NOT NULL,
    updated_by    TEXT,
    PRIMARY KEY (repository_id, environment, name)
);

CREATE TABLE secrets (
    repository_id TEXT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    environment   TEXT NOT NULL,
    name          TEXT NOT NULL,
    sealed        TEXT NOT NULL,
    updated_at    BIGINT NOT NULL,
    updated_by    TEXT,
    PRIMARY KEY (repository_id, environment, name)
);

CREATE TABLE group_members (
    group_name TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (group_name, user_id)
);

CREATE TABLE audit (
    id            TEXT PRIMARY KEY,
    repository_id TEXT,
    at            BIGINT NOT NULL,
    actor         TEXT NOT NULL,
    action        TEXT NOT NULL,
    target        TEXT NOT NULL,
    detail        TEXT
);
CREATE INDEX audit_repo ON audit (repository_id, at);
