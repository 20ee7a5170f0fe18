-- Turns and tokens per caller per UTC day, counted by each turn's own statement. A caller's day
-- is spread over 64 rows (by session) so that concurrent turns rarely wait for one another.
CREATE TABLE usage_daily (
    owner             TEXT NOT NULL,
    day               DATE NOT NULL,
    shard             SMALLINT NOT NULL CHECK (shard BETWEEN 0 AND 63),
    turns             BIGINT NOT NULL DEFAULT 0 CHECK (turns >= 0),
    prompt_tokens     BIGINT NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens BIGINT NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    PRIMARY KEY (owner, day, shard)
);
CREATE INDEX usage_daily_day ON usage_daily (day);
