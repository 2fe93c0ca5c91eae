-- Trust (issue 11): who sent a delivery and, for a pull request, its facts (JSON:
-- number, refs, whether it comes from a fork); what a repository does with a fork's
-- pull request (`ignore` or `run`, untrusted).
ALTER TABLE intake ADD COLUMN sender TEXT;
ALTER TABLE intake ADD COLUMN pull TEXT;
ALTER TABLE delivery_log ADD COLUMN sender TEXT;
ALTER TABLE delivery_log ADD COLUMN pull TEXT;
ALTER TABLE repositories ADD COLUMN fork_prs TEXT NOT NULL DEFAULT 'ignore';
