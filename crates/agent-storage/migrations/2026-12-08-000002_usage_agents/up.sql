-- Usage per agent too: a caller's day is counted per agent (the rows of before agents were named
-- have the agent '').
ALTER TABLE usage_daily ADD COLUMN agent TEXT NOT NULL DEFAULT '';
ALTER TABLE usage_daily DROP CONSTRAINT usage_daily_pkey;
ALTER TABLE usage_daily ADD PRIMARY KEY (owner, day, agent, shard);
