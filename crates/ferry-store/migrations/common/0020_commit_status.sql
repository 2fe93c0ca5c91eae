-- Where a repository's runs and deployments report their status on the forge (JSON:
-- forge, API URL, project and the sealed token); none: they do not.
ALTER TABLE repositories ADD COLUMN commit_status TEXT;
