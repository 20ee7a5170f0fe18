-- The agents' rows of a caller's day merged back into one per shard.
CREATE TEMPORARY TABLE usage_merged ON COMMIT DROP AS
    SELECT owner, day, shard, sum(turns)::bigint AS turns,
           sum(prompt_tokens)::bigint AS prompt_tokens,
           sum(completion_tokens)::bigint AS completion_tokens
    FROM usage_daily GROUP BY owner, day, shard;
DELETE FROM usage_daily;
ALTER TABLE usage_daily DROP CONSTRAINT usage_daily_pkey;
ALTER TABLE usage_daily DROP COLUMN agent;
INSERT INTO usage_daily (owner, day, shard, turns, prompt_tokens, completion_tokens)
    SELECT owner, day, shard, turns, prompt_tokens, completion_tokens FROM usage_merged;
ALTER TABLE usage_daily ADD PRIMARY KEY (owner, day, shard);
