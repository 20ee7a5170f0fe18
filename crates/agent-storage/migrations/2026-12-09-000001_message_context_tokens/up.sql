-- What each message takes of a model's context, counted once by the agent that wrote it (null:
-- not counted, e.g. stored before this column or with no context budget; counted when needed).
ALTER TABLE messages ADD COLUMN context_tokens BIGINT CHECK (context_tokens >= 0);
