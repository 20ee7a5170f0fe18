-- Runs that wait for the client: a run stopped before tool calls the client must answer (approve
-- or reject them, or run its own tools) is `requires_action`. It is still its session's active run
-- (the session stays busy) but holds no executor and no lease: everything needed to continue it is
-- in its `run_actions` row (opaque to the store: the server's JSON), which exists exactly while it
-- waits. An answer is written only over the `version` it read (every write takes a new one from a
-- sequence, so a version never comes back), so two answers sent at once to two replicas cannot
-- both resume the run. A run that waits has outlived its request: it is marked `background`, and
-- sends webhooks like one. (A side table rather than columns of `runs`: the runs table's rows stay
-- small and its lease renewals heap-only, and diesel's tables stay within 16 columns.)
ALTER TABLE runs DROP CONSTRAINT runs_status_check;
ALTER TABLE runs ADD CONSTRAINT runs_status_check
    CHECK (status IN ('queued', 'in_progress', 'requires_action', 'completed', 'failed',
                      'cancelled'));

-- One active run per session, waiting ones included.
DROP INDEX runs_one_active_per_session;
CREATE UNIQUE INDEX runs_one_active_per_session ON runs (session_id)
    WHERE status IN ('queued', 'in_progress', 'requires_action');

CREATE SEQUENCE run_action_versions;

CREATE TABLE run_actions (
    run_id      TEXT PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    pending     JSONB NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    version     BIGINT NOT NULL DEFAULT nextval('run_action_versions')
);
-- Waiting runs by when they expire, for the upkeep that fails them.
CREATE INDEX run_actions_expires_at ON run_actions (expires_at);

-- A run that stops waiting (resumed, cancelled, expired) leaves no pending state behind.
CREATE FUNCTION runs_drop_action() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM run_actions WHERE run_id = NEW.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER runs_drop_action
    AFTER UPDATE OF status ON runs
    FOR EACH ROW WHEN (OLD.status = 'requires_action' AND NEW.status <> 'requires_action')
    EXECUTE FUNCTION runs_drop_action();

-- Webhooks: a run that starts waiting sends `response.requires_action`; it ends as it would.
CREATE OR REPLACE FUNCTION runs_webhook_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (TG_OP = 'UPDATE'
            AND OLD.status IN ('queued', 'in_progress', 'requires_action')
            AND NEW.status IN ('completed', 'failed', 'cancelled'))
        OR (NEW.status = 'requires_action'
            AND (TG_OP = 'INSERT' OR OLD.status <> 'requires_action'))
    THEN
        INSERT INTO webhook_events (id, run_id, owner, type, subject)
        VALUES (
            'evt_' || replace(gen_random_uuid()::text, '-', ''),
            NEW.id,
            NEW.owner,
            'response.' || NEW.status,
            CASE WHEN NEW.input ? 'response' AND NEW.input -> 'response' <> 'null'::jsonb
                THEN 'resp_' || substr(NEW.id, 5)
                ELSE NEW.id
            END
        );
    END IF;
    RETURN NEW;
END
$$;

-- A run recorded when it starts waiting (a foreground run has no record before it ends).
CREATE TRIGGER runs_webhook_event_insert
    AFTER INSERT ON runs
    FOR EACH ROW WHEN (NEW.status = 'requires_action')
    EXECUTE FUNCTION runs_webhook_event();
