-- Which server handles a repository's waiting deliveries now (several servers may share
-- the database): one at a time, so that each delivery starts its run once and a
-- repository's deliveries keep their order; taken over only once the lease ran out.
CREATE TABLE intake_claims (
    repository_id TEXT PRIMARY KEY,
    owner         TEXT NOT NULL,
    lease_until   BIGINT NOT NULL
);
