-- Encrypted attachment blobs. The bytes live in files under DATA/blobs; this table says
-- which group a blob belongs to (only its members may fetch it) and whether it is complete.

CREATE TABLE blobs (
    id BLOB PRIMARY KEY CHECK (length(id) = 16),
    group_id BLOB NOT NULL REFERENCES groups (id),
    uploader BLOB NOT NULL REFERENCES devices (id),
    bytes_total INTEGER NOT NULL,
    chunk_count INTEGER NOT NULL,
    complete INTEGER NOT NULL CHECK (complete IN (0, 1)),
    created_at INTEGER NOT NULL
) STRICT;
