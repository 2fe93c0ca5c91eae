-- Registry credentials of a repository, for pulls and pushes of images on that host.
-- The password is sealed with the server's secret key (see src/secrets.rs).
CREATE TABLE registry_credentials (
    repository_id   TEXT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    host            TEXT NOT NULL,
    username        TEXT NOT NULL,
    sealed_password TEXT NOT NULL,
    updated_at      BIGINT NOT NULL,
    updated_by      TEXT,
    PRIMARY KEY (repository_id, host)
);
