-- The organisation's directory: users, their devices, and activation codes.
-- Times are Unix seconds. Identifiers and keys are BYTEA of fixed size. Names compare and
-- sort bytewise (COLLATE "C"), as in SQLite, whatever the database's locale.

CREATE TABLE org (
    singleton BOOLEAN PRIMARY KEY CHECK (singleton),
    org_id BYTEA NOT NULL CHECK (octet_length(org_id) = 16),
    created_at BIGINT NOT NULL
);

-- Counters every node increments under the row's lock (`UPDATE ... RETURNING`).
CREATE TABLE counters (
    name TEXT COLLATE "C" PRIMARY KEY,
    value BIGINT NOT NULL
);

-- Certificate serials: a sequence never hands out a number twice, whichever node asks,
-- and never waits for another node's transaction.
CREATE SEQUENCE certificate_serials AS BIGINT MINVALUE 1;

CREATE TABLE users (
    name TEXT COLLATE "C" PRIMARY KEY,
    display_name TEXT,
    created_at BIGINT NOT NULL
);

CREATE TABLE user_roles (
    user_name TEXT COLLATE "C" NOT NULL REFERENCES users (name),
    role TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (user_name, role)
);

CREATE TABLE devices (
    id BYTEA PRIMARY KEY CHECK (octet_length(id) = 16),
    user_name TEXT COLLATE "C" NOT NULL REFERENCES users (name),
    name TEXT NOT NULL,
    public_key BYTEA NOT NULL UNIQUE CHECK (octet_length(public_key) = 32),
    certificate BYTEA NOT NULL,
    certificate_serial BIGINT NOT NULL UNIQUE,
    certificate_not_after BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT,
    revoked_at BIGINT,
    -- NULL while a new device waits for approval by another device of its user.
    approved_at BIGINT,
    policy_version_acked BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX devices_by_user ON devices (user_name, created_at);

-- The secret itself is never stored: only its SHA-256.
CREATE TABLE activation_codes (
    id BYTEA PRIMARY KEY CHECK (octet_length(id) = 8),
    user_name TEXT COLLATE "C" NOT NULL REFERENCES users (name),
    secret_hash BYTEA NOT NULL CHECK (octet_length(secret_hash) = 32),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    failed_attempts BIGINT NOT NULL DEFAULT 0,
    state TEXT COLLATE "C" NOT NULL CHECK (state IN ('active', 'used', 'voided')),
    device_id BYTEA REFERENCES devices (id)
);
