-- Runs: every turn is a run, recorded from its start to its end. A run names the session it
-- continues (none for a conversation the client sent whole); at most one run of a session is
-- active (queued or in progress) at a time. Its terminal state is written by the same statement
-- that stores its turn (completed) or by a statement of its own (failed, cancelled: nothing
-- stored). A run's session may not exist yet (a first turn creates it when it is stored), so
-- there is no foreign key: a session's runs are deleted with it by the trigger below, and the
-- retention sweep deletes finished runs whose session never came to exist.
CREATE TABLE runs (
    id                TEXT PRIMARY KEY,
    owner             TEXT NOT NULL,
    session_id        TEXT,
    status            TEXT NOT NULL
        CHECK (status IN ('queued', 'in_progress', 'completed', 'failed', 'cancelled')),
    background        BOOLEAN NOT NULL DEFAULT false,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at        TIMESTAMPTZ,
    finished_at       TIMESTAMPTZ,
    -- Who executes it, until when: an expired lease means its replica is gone.
    lease_holder      TEXT,
    lease_expires_at  TIMESTAMPTZ,
    error_code        TEXT,
    error_message     TEXT,
    output_text       TEXT,
    prompt_tokens     BIGINT NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens BIGINT NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    -- A background run's input: for the executor that claims it, and what its response
    -- object shows while it is queued or running (the Responses API).
    input             JSONB,
    CHECK ((status IN ('completed', 'failed', 'cancelled')) = (finished_at IS NOT NULL))
) WITH (fillfactor = 90);
-- Room on each page for a lease renewal to stay a heap-only update (no index names the lease).

-- One active run per session: what `409 session_busy` names.
CREATE UNIQUE INDEX runs_one_active_per_session ON runs (session_id)
    WHERE status IN ('queued', 'in_progress');
-- A session's runs, newest first (GET /sessions/{id}/runs).
CREATE INDEX runs_session_created_at ON runs (session_id, created_at DESC, id DESC);
-- The queue: queued runs, oldest first (claimed with FOR UPDATE SKIP LOCKED), and each
-- caller's (its cap is counted on it).
CREATE INDEX runs_queued ON runs (created_at, id) WHERE status = 'queued';
CREATE INDEX runs_queued_owner ON runs (owner) WHERE status = 'queued';
-- Runs in progress, for the sweep that fails those whose executor is gone (their lease is read
-- from the row: indexing it would make every renewal rewrite the indexes).
CREATE INDEX runs_in_progress ON runs (started_at) WHERE status = 'in_progress';
-- (No index on finished_at: the retention sweep's search for orphaned runs reads most old runs
-- either way, and every turn would pay for it.)

CREATE FUNCTION runs_delete_with_session() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM runs WHERE session_id = OLD.id;
    RETURN OLD;
END
$$;

CREATE TRIGGER runs_delete_with_session
    AFTER DELETE ON sessions
    FOR EACH ROW EXECUTE FUNCTION runs_delete_with_session();
