DROP TRIGGER runs_webhook_event_insert ON runs;
DROP TRIGGER runs_drop_action ON runs;
DROP FUNCTION runs_drop_action();
UPDATE runs SET status = 'failed', error_code = 'action_expired',
    error_message = 'the run was waiting for the client when its migration was undone',
    finished_at = now()
    WHERE status = 'requires_action';
DROP TABLE run_actions;
DROP SEQUENCE run_action_versions;
CREATE OR REPLACE FUNCTION runs_webhook_event() RETURNS trigger LANGUAGE plpgsql AS $$
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
DROP INDEX runs_one_active_per_session;
CREATE UNIQUE INDEX runs_one_active_per_session ON runs (session_id)
    WHERE status IN ('queued', 'in_progress');
ALTER TABLE runs DROP CONSTRAINT runs_status_check;
ALTER TABLE runs ADD CONSTRAINT runs_status_check
    CHECK (status IN ('queued', 'in_progress', 'completed', 'failed', 'cancelled'));
