-- Webhook events: the terminal state of a background run (completed, failed, cancelled) writes
-- its event here in the same transaction (a trigger, so that every statement that ends a run
-- does: a turn's store, a cancel, a failure, the sweep of lost runs). Each replica's sender
-- takes the due events (FOR UPDATE SKIP LOCKED, holding each while it delivers) and posts them
-- to the endpoints the operator declared, at least once, retrying with backoff; `delivered_to`
-- keeps the endpoints that acknowledged it, so a retry goes to the others only.
CREATE TABLE webhook_events (
    -- The event's id: `evt_` and 32 hex digits, the `webhook-id` of every attempt.
    id               TEXT PRIMARY KEY,
    run_id           TEXT NOT NULL,
    owner            TEXT NOT NULL,
    type             TEXT NOT NULL,
    -- What `data.id` names: the run, or the response a background response's run is.
    subject          TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    delivered_to     TEXT[] NOT NULL DEFAULT '{}',
    -- Delivered everywhere it goes, or given up.
    finished_at      TIMESTAMPTZ
);

-- The due events, soonest first.
CREATE INDEX webhook_events_due ON webhook_events (next_attempt_at) WHERE finished_at IS NULL;
-- Finished events by age, to purge.
CREATE INDEX webhook_events_finished ON webhook_events (finished_at) WHERE finished_at IS NOT NULL;

CREATE FUNCTION runs_webhook_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status IN ('queued', 'in_progress')
        AND NEW.status IN ('completed', 'failed', 'cancelled')
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

-- Foreground runs (every request's turn) do not even call the function.
CREATE TRIGGER runs_webhook_event
    AFTER UPDATE OF status ON runs
    FOR EACH ROW WHEN (NEW.background)
    EXECUTE FUNCTION runs_webhook_event();
