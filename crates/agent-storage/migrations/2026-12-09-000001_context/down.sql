ALTER TABLE sessions DROP COLUMN summary_through;
ALTER TABLE sessions DROP COLUMN summary;
ALTER TABLE messages DROP COLUMN context_tokens;
