-- Conversations: one row per session, its messages in order, and idempotency records.
CREATE TABLE sessions (
    id                TEXT PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9._-]{1,128}$'),
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    next_sequence     BIGINT NOT NULL DEFAULT 0 CHECK (next_sequence >= 0),
    turn_count        BIGINT NOT NULL DEFAULT 0 CHECK (turn_count >= 0),
    prompt_tokens     BIGINT NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens BIGINT NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0)
);

CREATE TABLE messages (
    session_id   TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    sequence     BIGINT NOT NULL CHECK (sequence >= 0),
    role         TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content      TEXT NOT NULL,
    tool_calls   JSONB,
    tool_call_id TEXT,
    tokens       BIGINT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, sequence)
);

CREATE TABLE idempotency_records (
    key         TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    response    TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL
);

CREATE INDEX idempotency_records_expires_at ON idempotency_records (expires_at);
