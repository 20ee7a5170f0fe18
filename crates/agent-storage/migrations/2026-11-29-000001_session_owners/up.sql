-- Sessions belong to the caller that made them: a named caller's ids are stored as
-- `owner:id`, the anonymous caller's (and every session made before callers) as they are.
ALTER TABLE sessions DROP CONSTRAINT sessions_id_check;
ALTER TABLE sessions ADD CONSTRAINT sessions_id_check
    CHECK (id ~ '^([A-Za-z0-9._-]{1,64}:)?[A-Za-z0-9._-]{1,128}$');
ALTER TABLE sessions ADD COLUMN owner TEXT NOT NULL GENERATED ALWAYS AS (
    CASE WHEN strpos(id, ':') > 0 THEN split_part(id, ':', 1) ELSE 'anonymous' END
) STORED;
-- A caller's sessions, newest created first (GET /sessions).
CREATE INDEX sessions_owner_created_at ON sessions (owner, created_at DESC, id DESC);
