-- The intake takes each repository's waiting deliveries in order, one repository at a
-- time: found by repository, then by id.
CREATE INDEX intake_by_repository ON intake (repository_id, id);
