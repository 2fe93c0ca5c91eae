-- Webhook deliveries already handled, so that a redelivery starts nothing new.
CREATE TABLE deliveries (
    provider      TEXT NOT NULL,
    delivery_id   TEXT NOT NULL,
    repository_id TEXT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    received_at   BIGINT NOT NULL,
    run_id        TEXT,
    PRIMARY KEY (provider, delivery_id)
);
