CREATE INDEX runs_queued_owner ON runs (owner) WHERE status = 'queued';
DROP TRIGGER IF EXISTS runs_count_queued_delete ON runs;
DROP TRIGGER IF EXISTS runs_count_queued_update ON runs;
DROP TRIGGER IF EXISTS runs_count_queued_insert ON runs;
DROP FUNCTION IF EXISTS runs_count_queued();
DROP TABLE IF EXISTS run_queue_owner_counts;
DROP TABLE IF EXISTS run_queue_counts;
