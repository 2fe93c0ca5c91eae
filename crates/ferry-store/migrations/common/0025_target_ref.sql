-- What a deployment made where its target keeps things (the GitOps target: the commit it
-- pushed to the environment's repository).
ALTER TABLE deployments ADD COLUMN target_ref TEXT;
