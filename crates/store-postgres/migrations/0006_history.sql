-- History transfers: a device enrolled while its user had others waits for the user's
-- conversation history, which one of the user's devices sends it end-to-end encrypted
-- through a group made for that transfer. The server keeps who sends to whom and when;
-- the history itself is ciphertext in blobs of the transfer group.

CREATE TABLE history_transfers (
    device_id BYTEA PRIMARY KEY REFERENCES devices (id),
    user_name TEXT COLLATE "C" NOT NULL REFERENCES users (name),
    state TEXT COLLATE "C" NOT NULL CHECK (state IN ('waiting', 'sending', 'sent', 'received')),
    source_device BYTEA REFERENCES devices (id),
    group_id BYTEA,
    claimed_at BIGINT,
    sent_at BIGINT,
    received_at BIGINT,
    messages BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX history_transfers_by_user ON history_transfers (user_name);

CREATE TABLE transfer_groups (
    group_id BYTEA PRIMARY KEY REFERENCES groups (id),
    target_device BYTEA NOT NULL REFERENCES devices (id),
    source_device BYTEA NOT NULL REFERENCES devices (id),
    created_at BIGINT NOT NULL
);
