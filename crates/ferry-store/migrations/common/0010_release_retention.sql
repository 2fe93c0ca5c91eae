-- A release whose files a retention policy removed (the record stays).
ALTER TABLE releases ADD COLUMN pruned_at BIGINT;
