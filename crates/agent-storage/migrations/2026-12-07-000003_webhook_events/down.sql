DROP TRIGGER IF EXISTS runs_webhook_event ON runs;
DROP FUNCTION IF EXISTS runs_webhook_event();
DROP TABLE IF EXISTS webhook_events;
