DROP INDEX sessions_updated_at;
