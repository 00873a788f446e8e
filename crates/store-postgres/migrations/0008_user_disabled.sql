-- Directory integration: a user the directory (LDAP sync or SCIM) disabled keeps their
-- row, loses their devices and active codes, and may get no code until enabled again.
ALTER TABLE users ADD COLUMN disabled_at BIGINT;
