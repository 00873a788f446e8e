-- The delivery service: MLS key package pools, groups' public state, ordered logs,
-- membership (which entries a device may read) and Welcome inboxes. Message bytes are MLS
-- messages: application messages are ciphertext the server cannot read.

CREATE TABLE key_packages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id BLOB NOT NULL REFERENCES devices (id),
    key_package BLOB NOT NULL,
    last_resort INTEGER NOT NULL CHECK (last_resort IN (0, 1))
) STRICT;
CREATE INDEX key_packages_by_device ON key_packages (device_id, last_resort, id);

CREATE TABLE groups (
    id BLOB PRIMARY KEY CHECK (length(id) = 32),
    epoch INTEGER NOT NULL,
    state BLOB NOT NULL,
    last_seq INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE group_members (
    group_id BLOB NOT NULL REFERENCES groups (id),
    device_id BLOB NOT NULL REFERENCES devices (id),
    joined_seq INTEGER NOT NULL,
    removed_seq INTEGER,
    PRIMARY KEY (group_id, device_id)
) STRICT;
CREATE INDEX group_members_by_device ON group_members (device_id);

CREATE TABLE group_log (
    group_id BLOB NOT NULL REFERENCES groups (id),
    seq INTEGER NOT NULL,
    sender BLOB NOT NULL,
    client_message_id BLOB NOT NULL,
    message BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (group_id, seq),
    UNIQUE (group_id, sender, client_message_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id BLOB NOT NULL REFERENCES devices (id),
    group_id BLOB NOT NULL REFERENCES groups (id),
    welcome BLOB NOT NULL,
    joined_seq INTEGER NOT NULL
) STRICT;
CREATE INDEX inbox_by_device ON inbox (device_id, id);
