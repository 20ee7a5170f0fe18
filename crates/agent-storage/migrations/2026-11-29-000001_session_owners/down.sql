DROP INDEX sessions_owner_created_at;
ALTER TABLE sessions DROP COLUMN owner;
DELETE FROM sessions WHERE strpos(id, ':') > 0;
ALTER TABLE sessions DROP CONSTRAINT sessions_id_check;
ALTER TABLE sessions ADD CONSTRAINT sessions_id_check CHECK (id ~ '^[A-Za-z0-9._-]{1,128}$');
