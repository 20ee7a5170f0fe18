-- Context management: what each message takes of a context window, and summaries.
-- What each message takes of a model's context, counted once by the agent that wrote it (null:
-- not counted, e.g. stored before this column or with no context budget; counted when needed).
ALTER TABLE messages ADD COLUMN context_tokens BIGINT CHECK (context_tokens >= 0);
-- A session's summary of its earlier turns (context compaction): it stands in for the messages
-- before `summary_through` (a sequence number) in every later turn's request; those messages stay
-- stored and readable. Null while the session was never compacted.
ALTER TABLE sessions ADD COLUMN summary TEXT;
ALTER TABLE sessions ADD COLUMN summary_through BIGINT CHECK (summary_through >= 0);
