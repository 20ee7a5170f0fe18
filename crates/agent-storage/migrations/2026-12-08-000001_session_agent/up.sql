-- A session belongs to one agent: the one of its first turn (several agents may be served by one
-- deployment). Null for a session stored before agents were named: its next turn sets it.
ALTER TABLE sessions ADD COLUMN agent TEXT;
