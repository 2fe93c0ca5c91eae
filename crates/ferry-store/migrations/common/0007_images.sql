-- Images that jobs built (and pushed) with `build_image:`, with the registry's digest.
CREATE TABLE images (
    id          TEXT PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    job_id      TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    tags        TEXT NOT NULL,
    image_id    TEXT NOT NULL,
    digest      TEXT,
    created_at  BIGINT NOT NULL
);
CREATE INDEX images_run ON images (run_id);
