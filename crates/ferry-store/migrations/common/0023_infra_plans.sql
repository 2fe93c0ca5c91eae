-- Terraform plans of deployments (issue 14): the saved plan file (sealed: it holds the
-- variables' values), what it changes, and the state version it was made against. An
-- approval of a deployment that runs Terraform names the plan (its SHA-256) it approves.
CREATE TABLE infra_plans (
    id            TEXT PRIMARY KEY,
    deployment_id TEXT NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    repository_id TEXT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    environment   TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    sealed        TEXT NOT NULL,
    summary       TEXT NOT NULL,
    base_version  BIGINT,
    destroy       BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    applied_at    BIGINT,
    outputs       TEXT
);
CREATE INDEX infra_plans_by_deployment ON infra_plans (deployment_id, created_at);
CREATE INDEX infra_plans_by_environment ON infra_plans (repository_id, environment, created_at);
ALTER TABLE approvals ADD COLUMN plan_sha256 TEXT;
