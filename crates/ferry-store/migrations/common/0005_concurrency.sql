-- concurrency: groups; runs of one group in one repository run one at a time.
ALTER TABLE runs ADD COLUMN concurrency_group TEXT;
