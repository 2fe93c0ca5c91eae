-- A credential made for a plan may read and lock the state, never write it (a plan runs
-- the release's code before anyone approved it); a lock records the deployment whose
-- credential took it, so that it is let go when that deployment is done or interrupted.
ALTER TABLE infra_credentials ADD COLUMN may_write BIGINT NOT NULL DEFAULT 1;
ALTER TABLE infra_locks ADD COLUMN deployment_id TEXT;
