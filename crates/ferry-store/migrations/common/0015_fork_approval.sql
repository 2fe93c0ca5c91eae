-- `fork_prs: approve` (issue 11): a fork's pull request waits (`awaiting_approval` in
-- the delivery log) until a developer approves it; the delivery that then runs it
-- records who did.
ALTER TABLE intake ADD COLUMN approved_by TEXT;
ALTER TABLE delivery_log ADD COLUMN approved_by TEXT;
