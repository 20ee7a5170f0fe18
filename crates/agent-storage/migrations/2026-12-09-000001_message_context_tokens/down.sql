ALTER TABLE messages DROP COLUMN context_tokens;
