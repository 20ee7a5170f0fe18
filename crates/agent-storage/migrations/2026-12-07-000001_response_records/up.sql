-- A response is kept as the facts the server renders it from (what its request asked, its
-- answer, its usage), not as the API's JSON: the API's shape can change without touching the
-- rows, and the id's format is the API's business, not the table's. Existing rows are read out of
-- their JSON.
ALTER TABLE responses DROP CONSTRAINT IF EXISTS responses_id_check;
ALTER TABLE responses
    ADD COLUMN model                TEXT,
    ADD COLUMN instructions         TEXT,
    ADD COLUMN previous_response_id TEXT,
    ADD COLUMN temperature          REAL,
    ADD COLUMN top_p                REAL,
    ADD COLUMN max_output_tokens    INTEGER,
    ADD COLUMN user_name            TEXT,
    ADD COLUMN metadata             JSONB,
    ADD COLUMN text_format          JSONB,
    ADD COLUMN output_text          TEXT,
    ADD COLUMN prompt_tokens        BIGINT,
    ADD COLUMN completion_tokens    BIGINT;

UPDATE responses SET
    model = COALESCE(parsed.body ->> 'model', ''),
    instructions = parsed.body ->> 'instructions',
    previous_response_id = parsed.body ->> 'previous_response_id',
    temperature = (parsed.body ->> 'temperature')::real,
    top_p = (parsed.body ->> 'top_p')::real,
    max_output_tokens = (parsed.body ->> 'max_output_tokens')::integer,
    user_name = parsed.body ->> 'user',
    metadata = COALESCE(NULLIF(parsed.body -> 'metadata', 'null'::jsonb), '{}'::jsonb),
    -- `{"type": "text"}` was written for a request without a format.
    text_format = NULLIF(NULLIF(parsed.body #> '{text,format}', '{"type": "text"}'::jsonb), 'null'::jsonb),
    output_text = COALESCE(parsed.body #>> '{output,0,content,0,text}', ''),
    prompt_tokens = COALESCE((parsed.body #>> '{usage,input_tokens}')::bigint, 0),
    completion_tokens = COALESCE((parsed.body #>> '{usage,output_tokens}')::bigint, 0),
    created_at = COALESCE(to_timestamp((parsed.body ->> 'created_at')::double precision), responses.created_at)
FROM (SELECT id, body::jsonb AS body FROM responses) AS parsed
WHERE responses.id = parsed.id;

ALTER TABLE responses
    ALTER COLUMN model SET NOT NULL,
    ALTER COLUMN metadata SET NOT NULL,
    ALTER COLUMN metadata SET DEFAULT '{}'::jsonb,
    ALTER COLUMN output_text SET NOT NULL,
    ALTER COLUMN prompt_tokens SET NOT NULL,
    ALTER COLUMN completion_tokens SET NOT NULL,
    ADD CONSTRAINT responses_tokens_check CHECK (prompt_tokens >= 0 AND completion_tokens >= 0),
    DROP COLUMN body;
