-- When a deployment's verification (health checks) started and ended, so a user can see
-- how long it took without reading its log.
ALTER TABLE deployments ADD COLUMN verification_started_at BIGINT;
ALTER TABLE deployments ADD COLUMN verification_finished_at BIGINT;
