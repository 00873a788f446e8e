-- Device management: directory groups, policies, remote commands and the hash-chained
-- audit log.

INSERT INTO counters (name, value) VALUES ('policy_version', 0);

CREATE TABLE directory_groups (
    name TEXT COLLATE "C" PRIMARY KEY,
    created_at BIGINT NOT NULL
);

CREATE TABLE directory_group_members (
    group_name TEXT COLLATE "C" NOT NULL REFERENCES directory_groups (name),
    user_name TEXT COLLATE "C" NOT NULL REFERENCES users (name),
    PRIMARY KEY (group_name, user_name)
);
CREATE INDEX directory_group_members_by_user ON directory_group_members (user_name);

-- Settings are the postcard encoding of redoubt_proto::PolicySettings.
CREATE TABLE policies (
    scope_kind TEXT COLLATE "C" NOT NULL CHECK (scope_kind IN ('default', 'group', 'user')),
    scope_name TEXT COLLATE "C" NOT NULL,
    settings BYTEA NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (scope_kind, scope_name)
);

CREATE TABLE device_commands (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id BYTEA NOT NULL REFERENCES devices (id),
    kind TEXT COLLATE "C" NOT NULL CHECK (kind IN ('lock', 'unlock', 'wipe')),
    issued_by TEXT COLLATE "C" NOT NULL,
    issued_at BIGINT NOT NULL,
    acked_at BIGINT
);
CREATE INDEX device_commands_by_device ON device_commands (device_id, id);

-- hash = SHA-256 over the entry (redoubt_proto::AuditEntry::compute_hash), prev_hash the
-- entry before's. Rows are never updated or deleted; the triggers refuse it.
CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor_user TEXT COLLATE "C",
    actor_device BYTEA,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    details TEXT NOT NULL,
    prev_hash BYTEA NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash BYTEA NOT NULL CHECK (octet_length(hash) = 32)
);
CREATE FUNCTION audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END;
$$;
CREATE TRIGGER audit_log_no_update_or_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change();

-- The chain's newest entry, in one row. Every append locks it first (SELECT ... FOR
-- UPDATE), so the entries of every node form one chain, numbered in commit order.
-- seq 0: the chain is empty and the next entry follows redoubt_proto::AUDIT_GENESIS.
CREATE TABLE audit_head (
    singleton BOOLEAN PRIMARY KEY CHECK (singleton),
    seq BIGINT NOT NULL,
    hash BYTEA NOT NULL CHECK (octet_length(hash) = 32)
);
INSERT INTO audit_head (singleton, seq, hash) VALUES (TRUE, 0, decode(repeat('00', 32), 'hex'));

-- Organisation-signed heads of the chain (redoubt_proto::Signed<CheckpointBody>).
CREATE TABLE audit_checkpoints (
    seq BIGINT PRIMARY KEY REFERENCES audit_log (seq),
    document BYTEA NOT NULL
);
