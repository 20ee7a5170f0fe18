-- How many background runs are queued, all callers together (64 shards) and per caller (8 shards
-- each), as usage_daily keeps its sums: the queue's caps are checked by summing a few rows instead
-- of counting the queue, so queueing costs the same however long the queue is, and concurrent
-- enqueues and claims rarely wait on one row. Triggers keep them: a row that becomes queued adds
-- one to a random shard of each, one that stops being queued (claimed, cancelled, deleted with its
-- session) takes one from a random shard; a shard may go below zero, the sums are exact. Only
-- rows that are or were queued call the function (the triggers' WHEN), so a turn's run costs
-- nothing here.
CREATE TABLE run_queue_counts (
    shard  SMALLINT PRIMARY KEY,
    queued BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE run_queue_owner_counts (
    owner  TEXT NOT NULL,
    shard  SMALLINT NOT NULL,
    queued BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (owner, shard)
);

INSERT INTO run_queue_counts (shard, queued)
SELECT shard, CASE WHEN shard = 0
    THEN (SELECT count(*) FROM runs WHERE status = 'queued') ELSE 0 END
FROM generate_series(0, 63) AS shard;

INSERT INTO run_queue_owner_counts (owner, shard, queued)
SELECT owner, 0, count(*) FROM runs WHERE status = 'queued' GROUP BY owner;

CREATE FUNCTION runs_count_queued() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    -- Drawn once: random() in a WHERE clause is drawn again for every row it scans.
    one SMALLINT := floor(random() * 64)::smallint;
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.status = 'queued' THEN
        UPDATE run_queue_counts SET queued = queued + 1 WHERE shard = one;
        INSERT INTO run_queue_owner_counts AS c (owner, shard, queued)
        VALUES (NEW.owner, one % 8, 1)
        ON CONFLICT (owner, shard) DO UPDATE SET queued = c.queued + 1;
    ELSIF TG_OP IN ('UPDATE', 'DELETE') AND OLD.status = 'queued' THEN
        UPDATE run_queue_counts SET queued = queued - 1 WHERE shard = one;
        INSERT INTO run_queue_owner_counts AS c (owner, shard, queued)
        VALUES (OLD.owner, one % 8, -1)
        ON CONFLICT (owner, shard) DO UPDATE SET queued = c.queued - 1;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER runs_count_queued_insert
    AFTER INSERT ON runs
    FOR EACH ROW WHEN (NEW.status = 'queued')
    EXECUTE FUNCTION runs_count_queued();

CREATE TRIGGER runs_count_queued_update
    AFTER UPDATE OF status ON runs
    FOR EACH ROW WHEN ((OLD.status = 'queued') <> (NEW.status = 'queued'))
    EXECUTE FUNCTION runs_count_queued();

CREATE TRIGGER runs_count_queued_delete
    AFTER DELETE ON runs
    FOR EACH ROW WHEN (OLD.status = 'queued')
    EXECUTE FUNCTION runs_count_queued();

-- The counters replace the index the per-caller count scanned.
DROP INDEX IF EXISTS runs_queued_owner;
