-- A group's stored public state may lag its log: it is as of entry `state_seq`, and the
-- handshakes after it (marked in the log, with an index of their own) are replayed over
-- it. Existing states are current, and no existing entry needs replaying.
ALTER TABLE groups ADD COLUMN state_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE group_log ADD COLUMN handshake INTEGER NOT NULL DEFAULT 0;
CREATE INDEX group_log_handshakes ON group_log (group_id, seq) WHERE handshake = 1;
