-- A response is kept as the facts the server renders it from (what its request asked, its
-- answer, its usage), not as the API's JSON: the API's shape can change without touching the
-- rows, and the id's format is the API's business, not the table's.
--
-- This is the expand step of an expand/contract change, so that replicas of the previous release
-- keep working against this schema during a rolling upgrade: `body` stays (nullable, no longer
-- written by this release), the new columns have defaults (a previous release's insert names only
-- `body`), and a trigger turns any `body` written (the rows below, and the previous release's
-- inserts during the rollout) into the record's columns. A later release drops `body` and the
-- trigger.
ALTER TABLE responses DROP CONSTRAINT IF EXISTS responses_id_check;
ALTER TABLE responses
    ALTER COLUMN body DROP NOT NULL,
    ADD COLUMN model                TEXT NOT NULL DEFAULT '',
    ADD COLUMN instructions         TEXT,
    ADD COLUMN previous_response_id TEXT,
    ADD COLUMN temperature          REAL,
    ADD COLUMN top_p                REAL,
    ADD COLUMN max_output_tokens    INTEGER,
    ADD COLUMN user_name            TEXT,
    ADD COLUMN metadata             JSONB NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN text_format          JSONB,
    ADD COLUMN output_text          TEXT NOT NULL DEFAULT '',
    ADD COLUMN prompt_tokens        BIGINT NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    ADD COLUMN completion_tokens    BIGINT NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0);

-- The record's columns of a response written as the API's JSON.
CREATE FUNCTION responses_record_from_body() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    answered JSONB := NEW.body::jsonb;
BEGIN
    NEW.model := COALESCE(answered ->> 'model', '');
    NEW.instructions := answered ->> 'instructions';
    NEW.previous_response_id := answered ->> 'previous_response_id';
    NEW.temperature := (answered ->> 'temperature')::real;
    NEW.top_p := (answered ->> 'top_p')::real;
    NEW.max_output_tokens := (answered ->> 'max_output_tokens')::integer;
    NEW.user_name := answered ->> 'user';
    NEW.metadata := COALESCE(NULLIF(answered -> 'metadata', 'null'::jsonb), '{}'::jsonb);
    -- `{"type": "text"}` was written for a request without a format.
    NEW.text_format := NULLIF(NULLIF(answered #> '{text,format}', '{"type": "text"}'::jsonb), 'null'::jsonb);
    NEW.output_text := COALESCE(answered #>> '{output,0,content,0,text}', '');
    NEW.prompt_tokens := COALESCE((answered #>> '{usage,input_tokens}')::bigint, 0);
    NEW.completion_tokens := COALESCE((answered #>> '{usage,output_tokens}')::bigint, 0);
    NEW.created_at := COALESCE(to_timestamp((answered ->> 'created_at')::double precision), NEW.created_at);
    RETURN NEW;
END
$$;

CREATE TRIGGER responses_record_from_body
    BEFORE INSERT OR UPDATE OF body ON responses
    FOR EACH ROW WHEN (NEW.body IS NOT NULL)
    EXECUTE FUNCTION responses_record_from_body();

-- The rows kept so far, through the trigger.
UPDATE responses SET body = body WHERE body IS NOT NULL;
