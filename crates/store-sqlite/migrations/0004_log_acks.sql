-- How far each member device has processed a group's log, so entries every member has
-- acknowledged can be deleted.
ALTER TABLE group_members ADD COLUMN acked_seq INTEGER NOT NULL DEFAULT 0;
