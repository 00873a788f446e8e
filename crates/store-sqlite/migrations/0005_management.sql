-- Device management: approval, policy acknowledgement, directory groups, policies,
-- remote commands and the hash-chained audit log.

ALTER TABLE devices ADD COLUMN approved_at INTEGER;
UPDATE devices SET approved_at = created_at;
ALTER TABLE devices ADD COLUMN policy_version_acked INTEGER NOT NULL DEFAULT 0;

INSERT INTO counters (name, value) VALUES ('policy_version', 0);

CREATE TABLE directory_groups (
    name TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE directory_group_members (
    group_name TEXT NOT NULL REFERENCES directory_groups (name),
    user_name TEXT NOT NULL REFERENCES users (name),
    PRIMARY KEY (group_name, user_name)
) STRICT;
CREATE INDEX directory_group_members_by_user ON directory_group_members (user_name);

-- Settings are the postcard encoding of redoubt_proto::PolicySettings.
CREATE TABLE policies (
    scope_kind TEXT NOT NULL CHECK (scope_kind IN ('default', 'group', 'user')),
    scope_name TEXT NOT NULL,
    settings BLOB NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (scope_kind, scope_name)
) STRICT;

CREATE TABLE device_commands (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id BLOB NOT NULL REFERENCES devices (id),
    kind TEXT NOT NULL CHECK (kind IN ('lock', 'unlock', 'wipe')),
    issued_by TEXT NOT NULL,
    issued_at INTEGER NOT NULL,
    acked_at INTEGER
) STRICT;
CREATE INDEX device_commands_by_device ON device_commands (device_id, id);

-- hash = SHA-256 over the entry (redoubt_proto::AuditEntry::compute_hash), prev_hash the
-- entry before's. Rows are never updated or deleted; the triggers refuse it.
CREATE TABLE audit_log (
    seq INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    actor_user TEXT,
    actor_device BLOB,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    details TEXT NOT NULL,
    prev_hash BLOB NOT NULL CHECK (length(prev_hash) = 32),
    hash BLOB NOT NULL CHECK (length(hash) = 32)
) STRICT;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;

-- Organisation-signed heads of the chain (redoubt_proto::Signed<CheckpointBody>).
CREATE TABLE audit_checkpoints (
    seq INTEGER PRIMARY KEY REFERENCES audit_log (seq),
    document BLOB NOT NULL
) STRICT;
