DROP TRIGGER IF EXISTS runs_delete_with_session ON sessions;
DROP FUNCTION IF EXISTS runs_delete_with_session();
DROP TABLE IF EXISTS runs;
