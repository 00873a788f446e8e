-- Key transparency (`redoubt_server::kt`): the key directory the server publishes, one
-- signed epoch at a time, so devices and auditors can check that every user is shown the
-- same device keys. akd's records are opaque here: the server encodes them. Keys and
-- labels compare bytewise, as in SQLite.

-- akd's tree (its aZKS and the tree nodes), by binary key; replaced as epochs move it.
CREATE TABLE kt_nodes (
    key BYTEA PRIMARY KEY,
    record BYTEA NOT NULL
);

-- Every logged state of a label (akd's value states): history proofs need them all.
CREATE TABLE kt_values (
    label BYTEA NOT NULL,
    epoch BIGINT NOT NULL,
    version BIGINT NOT NULL,
    record BYTEA NOT NULL,
    PRIMARY KEY (label, epoch)
);

-- The device certificates and approvals each logged value commits to (postcard of two
-- Vec<Vec<u8>>, the
-- same bytes as SQLite's), so a device can be shown what its user's published value
-- stands for.
CREATE TABLE kt_sets (
    user_name TEXT COLLATE "C" NOT NULL,
    epoch BIGINT NOT NULL,
    device_set BYTEA NOT NULL,
    PRIMARY KEY (user_name, epoch)
);

-- Each epoch's signed head. Published heads are what devices and auditors hold the server
-- to: written once, never changed; the triggers refuse it.
CREATE TABLE kt_heads (
    epoch BIGINT PRIMARY KEY,
    head BYTEA NOT NULL,
    -- The append-only proof from the epoch before, made when this one was published.
    proof BYTEA NOT NULL
);
CREATE FUNCTION kt_heads_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'key directory heads are append-only';
END;
$$;
CREATE TRIGGER kt_heads_no_update_or_delete BEFORE UPDATE OR DELETE ON kt_heads
    FOR EACH ROW EXECUTE FUNCTION kt_heads_refuse_change();
CREATE TRIGGER kt_heads_no_truncate BEFORE TRUNCATE ON kt_heads
    FOR EACH STATEMENT EXECUTE FUNCTION kt_heads_refuse_change();

-- Users whose device set changed since they were last published: the next epoch's work.
-- The key tables name users without foreign keys: the log is kept as published.
CREATE TABLE kt_changed (
    user_name TEXT COLLATE "C" PRIMARY KEY
);

-- Each auditor's newest countersignature of a head, by the auditor's Ed25519 key.
CREATE TABLE kt_auditors (
    auditor_key BYTEA PRIMARY KEY CHECK (octet_length(auditor_key) = 32),
    epoch BIGINT NOT NULL,
    document BYTEA NOT NULL
);

-- The approving device's signed approval of a device (policy `new_device_approval`): the key
-- directory logs it with the device's certificate.
ALTER TABLE devices ADD COLUMN approval BYTEA;
