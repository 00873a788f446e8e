-- Key transparency (`redoubt_server::kt`): the key directory the server publishes, one
-- signed epoch at a time, so devices and auditors can check that every user is shown the
-- same device keys. akd's records are opaque here: the server encodes them.

-- akd's tree (its aZKS and the tree nodes), by binary key; replaced as epochs move it.
-- WITHOUT ROWID: the key is the only index, so an upsert touches one B-tree, not two.
CREATE TABLE kt_nodes (
    key BLOB PRIMARY KEY,
    record BLOB NOT NULL
) STRICT, WITHOUT ROWID;

-- Every logged state of a label (akd's value states): history proofs need them all.
CREATE TABLE kt_values (
    label BLOB NOT NULL,
    epoch INTEGER NOT NULL,
    version INTEGER NOT NULL,
    record BLOB NOT NULL,
    PRIMARY KEY (label, epoch)
) STRICT, WITHOUT ROWID;

-- The device certificates and approvals each logged value commits to (postcard of two
-- Vec<Vec<u8>>), so a
-- device can be shown what its user's published value stands for.
CREATE TABLE kt_sets (
    user_name TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    device_set BLOB NOT NULL,
    PRIMARY KEY (user_name, epoch)
) STRICT;

-- Each epoch's signed head. Published heads are what devices and auditors hold the server
-- to: written once, never changed; the triggers refuse it.
CREATE TABLE kt_heads (
    epoch INTEGER PRIMARY KEY,
    head BLOB NOT NULL,
    -- The append-only proof from the epoch before, made when this one was published.
    proof BLOB NOT NULL
) STRICT;
CREATE TRIGGER kt_heads_no_update BEFORE UPDATE ON kt_heads
BEGIN SELECT RAISE(ABORT, 'key directory heads are append-only'); END;
CREATE TRIGGER kt_heads_no_delete BEFORE DELETE ON kt_heads
BEGIN SELECT RAISE(ABORT, 'key directory heads are append-only'); END;

-- Users whose device set changed since they were last published: the next epoch's work.
-- The key tables name users without foreign keys: the log is kept as published.
CREATE TABLE kt_changed (
    user_name TEXT PRIMARY KEY
) STRICT;

-- Each auditor's newest countersignature of a head, by the auditor's Ed25519 key.
CREATE TABLE kt_auditors (
    auditor_key BLOB PRIMARY KEY CHECK (length(auditor_key) = 32),
    epoch INTEGER NOT NULL,
    document BLOB NOT NULL
) STRICT;

-- The approving device's signed approval of a device (policy `new_device_approval`): the key
-- directory logs it with the device's certificate.
ALTER TABLE devices ADD COLUMN approval BLOB;
