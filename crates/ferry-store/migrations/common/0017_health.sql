-- The health watch: each watched environment's state now (one row per environment:
-- the live deployment it was last seen with) and every change of it, which `ferry
-- status` shows and DORA's time to restore is computed from.
CREATE TABLE environment_health (
    repository_id TEXT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    environment TEXT NOT NULL,
    deployment_id TEXT NOT NULL,
    state TEXT NOT NULL,
    since BIGINT NOT NULL,
    reason TEXT,
    PRIMARY KEY (repository_id, environment)
);
CREATE TABLE health_changes (
    id TEXT PRIMARY KEY,
    repository_id TEXT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    environment TEXT NOT NULL,
    deployment_id TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    reason TEXT,
    at BIGINT NOT NULL
);
CREATE INDEX health_changes_by_environment ON health_changes (repository_id, environment, at);
