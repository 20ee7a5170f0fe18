ALTER TABLE sessions DROP COLUMN agent;
