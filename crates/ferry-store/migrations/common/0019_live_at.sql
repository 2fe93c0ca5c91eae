-- When a deployment went live (none: it never did), for DORA's figures: a deployment
-- rolled back after it went down was live; one rolled back after failing was not.
ALTER TABLE deployments ADD COLUMN live_at BIGINT;
UPDATE deployments SET live_at = finished_at WHERE status IN ('live', 'replaced');
CREATE INDEX deployments_by_finish ON deployments (repository_id, finished_at);
