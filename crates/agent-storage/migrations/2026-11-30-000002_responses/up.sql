-- Response objects of the OpenAI-compatible Responses API: each names the session its turn was
-- stored in and the session's next_sequence once it was (its place in the conversation, which
-- `previous_response_id` continues from). Written by the turn's own statement; deleted with
-- their session.
CREATE TABLE responses (
    id         TEXT PRIMARY KEY CHECK (id ~ '^resp_[0-9a-f]{32}$'),
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    sequence   BIGINT NOT NULL CHECK (sequence > 0),
    body       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX responses_session_id ON responses (session_id);
