-- The retention sweep finds idle sessions, oldest first, without reading the whole table.
CREATE INDEX sessions_updated_at ON sessions (updated_at);
