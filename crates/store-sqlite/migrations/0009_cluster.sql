-- Several server nodes over one database (PostgreSQL); a single SQLite node records itself
-- too, so `admin cluster list` reads the same everywhere.

-- Each node's last heartbeat.
CREATE TABLE cluster_nodes (
    id TEXT PRIMARY KEY,
    public_address TEXT NOT NULL,
    sessions INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    stopped INTEGER NOT NULL CHECK (stopped IN (0, 1))
) STRICT;

-- Jobs one node at a time does (the mail connector): who holds each, until when, and the
-- fencing token the holder stamps on its writes.
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    token INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL
) STRICT;

-- Blob bytes kept in the database (where every node must serve them); SQLite's single node
-- keeps them in files under DATA/blobs instead.
CREATE TABLE blob_chunks (
    blob_id BLOB NOT NULL REFERENCES blobs (id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (blob_id, idx)
) STRICT;
