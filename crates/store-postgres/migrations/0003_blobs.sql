-- Encrypted attachment blobs: which group a blob belongs to (only its members may fetch
-- it) and whether it is complete.

CREATE TABLE blobs (
    id BYTEA PRIMARY KEY CHECK (octet_length(id) = 16),
    group_id BYTEA NOT NULL REFERENCES groups (id),
    uploader BYTEA NOT NULL REFERENCES devices (id),
    bytes_total BIGINT NOT NULL,
    chunk_count BIGINT NOT NULL,
    complete BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX blobs_by_group ON blobs (group_id);
