-- Every webhook delivery a repository received, as the forges' "recent deliveries"
-- pages show them: what it asked for (as in `intake`) and what became of it (a run, or
-- why none).
CREATE TABLE delivery_log (
    id TEXT PRIMARY KEY,
    repository_id TEXT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    provider TEXT NOT NULL, delivery_id TEXT, event TEXT NOT NULL,
    git_ref TEXT NOT NULL, sha TEXT NOT NULL, received_at BIGINT NOT NULL,
    status TEXT NOT NULL, run_id TEXT, reason TEXT, finished_at BIGINT, redelivery_of TEXT
);
CREATE INDEX delivery_log_by_repository ON delivery_log (repository_id, received_at);
