-- Several server nodes over one database: their heartbeats, the leases that let one node
-- at a time do a job, and blob bytes, which every node must serve.

-- Each node's last heartbeat.
CREATE TABLE cluster_nodes (
    id TEXT COLLATE "C" PRIMARY KEY,
    public_address TEXT NOT NULL,
    sessions BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    stopped BOOLEAN NOT NULL
);

-- Jobs one node at a time does (the mail connector): who holds each, until when, and the
-- fencing token the holder stamps on its writes.
CREATE TABLE leases (
    name TEXT COLLATE "C" PRIMARY KEY,
    holder TEXT COLLATE "C" NOT NULL,
    token BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);

-- Blob bytes, in chunks. They are ciphertext: stored out of line without PostgreSQL
-- trying to compress them first (EXTERNAL).
CREATE TABLE blob_chunks (
    blob_id BYTEA NOT NULL REFERENCES blobs (id) ON DELETE CASCADE,
    idx BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (blob_id, idx)
);
ALTER TABLE blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
