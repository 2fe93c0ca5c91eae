-- Terraform per environment (issue 14). Ferry keeps each environment's state itself,
-- as Terraform's `http` backend writes it: every version kept, sealed with the server's
-- key like secrets (`sealed`; empty: the state was deleted at this version).
CREATE TABLE infra_states (
    repository_id TEXT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    environment   TEXT NOT NULL,
    version       BIGINT NOT NULL,
    sealed        TEXT NOT NULL,
    serial        BIGINT,
    lineage       TEXT,
    size          BIGINT NOT NULL,
    sha256        TEXT NOT NULL,
    deployment_id TEXT,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (repository_id, environment, version)
);
-- The lock Terraform takes around a change of the state (at most one per environment).
CREATE TABLE infra_locks (
    repository_id TEXT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    environment   TEXT NOT NULL,
    lock_id       TEXT NOT NULL,
    info          TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (repository_id, environment)
);
-- Short-lived credentials of the backend: one per deployment that runs Terraform, for its
-- environment only, kept as the SHA-256 of the password.
CREATE TABLE infra_credentials (
    hash          TEXT PRIMARY KEY,
    repository_id TEXT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    environment   TEXT NOT NULL,
    deployment_id TEXT,
    expires_at    BIGINT NOT NULL
);
