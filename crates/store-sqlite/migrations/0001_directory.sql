-- The organisation's directory: users, their devices, and activation codes.
-- Times are Unix seconds. Identifiers and keys are BLOBs of fixed size.

CREATE TABLE org (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    org_id BLOB NOT NULL CHECK (length(org_id) = 16),
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) STRICT;
INSERT INTO counters (name, value) VALUES ('certificate_serial', 0);

CREATE TABLE users (
    name TEXT PRIMARY KEY,
    display_name TEXT,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE user_roles (
    user_name TEXT NOT NULL REFERENCES users (name),
    role TEXT NOT NULL,
    PRIMARY KEY (user_name, role)
) STRICT;

CREATE TABLE devices (
    id BLOB PRIMARY KEY CHECK (length(id) = 16),
    user_name TEXT NOT NULL REFERENCES users (name),
    name TEXT NOT NULL,
    public_key BLOB NOT NULL UNIQUE CHECK (length(public_key) = 32),
    certificate BLOB NOT NULL,
    certificate_serial INTEGER NOT NULL UNIQUE,
    certificate_not_after INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    last_seen_at INTEGER,
    revoked_at INTEGER
) STRICT;
CREATE INDEX devices_by_user ON devices (user_name, created_at);

-- The secret itself is never stored: only its SHA-256.
CREATE TABLE activation_codes (
    id BLOB PRIMARY KEY CHECK (length(id) = 8),
    user_name TEXT NOT NULL REFERENCES users (name),
    secret_hash BLOB NOT NULL CHECK (length(secret_hash) = 32),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL CHECK (state IN ('active', 'used', 'voided')),
    device_id BLOB REFERENCES devices (id)
) STRICT;
