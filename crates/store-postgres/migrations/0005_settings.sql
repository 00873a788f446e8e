-- Organisation-wide settings the server keeps as opaque documents (the mail connector's
-- server settings, each user's mail address). Secrets inside are sealed by the server
-- before they get here.
CREATE TABLE settings (
    key TEXT COLLATE "C" PRIMARY KEY,
    value BYTEA NOT NULL
);
