-- History transfers: a device enrolled while its user had others waits for the user's
-- conversation history, which one of the user's devices sends it end-to-end encrypted
-- through a group made for that transfer. The server keeps who sends to whom and when;
-- the history itself is ciphertext in blobs of the transfer group.

CREATE TABLE history_transfers (
    device_id BLOB PRIMARY KEY REFERENCES devices (id),
    user_name TEXT NOT NULL REFERENCES users (name),
    state TEXT NOT NULL CHECK (state IN ('waiting', 'sending', 'sent', 'received')),
    source_device BLOB REFERENCES devices (id),
    group_id BLOB,
    claimed_at INTEGER,
    sent_at INTEGER,
    received_at INTEGER,
    messages INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX history_transfers_by_user ON history_transfers (user_name);

CREATE TABLE transfer_groups (
    group_id BLOB PRIMARY KEY REFERENCES groups (id),
    target_device BLOB NOT NULL REFERENCES devices (id),
    source_device BLOB NOT NULL REFERENCES devices (id),
    created_at INTEGER NOT NULL
) STRICT;

CREATE INDEX blobs_by_group ON blobs (group_id);
