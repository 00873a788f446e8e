-- The delivery service: MLS key package pools, groups' public state, ordered logs,
-- membership (which entries a device may read) and Welcome inboxes. Message bytes are MLS
-- messages: application messages are ciphertext the server cannot read.

CREATE TABLE key_packages (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id BYTEA NOT NULL REFERENCES devices (id),
    key_package BYTEA NOT NULL,
    last_resort BOOLEAN NOT NULL
);
CREATE INDEX key_packages_by_device ON key_packages (device_id, last_resort, id);
CREATE UNIQUE INDEX key_packages_one_last_resort ON key_packages (device_id) WHERE last_resort;

-- Every append updates its group's row (`last_seq`, under the row's lock): room on each
-- page lets PostgreSQL write the new row version beside the old one (a HOT update). The
-- state, often large, is stored out of line and not copied by such updates.
CREATE TABLE groups (
    id BYTEA PRIMARY KEY CHECK (octet_length(id) = 32),
    epoch BIGINT NOT NULL,
    -- The group's public state as of log entry `state_seq`; the handshakes after it are
    -- replayed over it.
    state BYTEA NOT NULL,
    state_seq BIGINT NOT NULL DEFAULT 0,
    last_seq BIGINT NOT NULL,
    created_at BIGINT NOT NULL
) WITH (fillfactor = 70);

CREATE TABLE group_members (
    group_id BYTEA NOT NULL REFERENCES groups (id),
    device_id BYTEA NOT NULL REFERENCES devices (id),
    joined_seq BIGINT NOT NULL,
    removed_seq BIGINT,
    -- How far the device has processed the log, so entries every member has acknowledged
    -- can be deleted.
    acked_seq BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (group_id, device_id)
);
CREATE INDEX group_members_by_device ON group_members (device_id);

CREATE TABLE group_log (
    group_id BYTEA NOT NULL REFERENCES groups (id),
    seq BIGINT NOT NULL,
    sender BYTEA NOT NULL,
    client_message_id BYTEA NOT NULL,
    message BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    -- Appended with a group transition (a commit): replayed over a lagging stored state.
    handshake BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (group_id, seq),
    UNIQUE (group_id, sender, client_message_id)
);
CREATE INDEX group_log_handshakes ON group_log (group_id, seq) WHERE handshake;

CREATE TABLE inbox (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id BYTEA NOT NULL REFERENCES devices (id),
    group_id BYTEA NOT NULL REFERENCES groups (id),
    welcome BYTEA NOT NULL,
    joined_seq BIGINT NOT NULL
);
CREATE INDEX inbox_by_device ON inbox (device_id, id);
