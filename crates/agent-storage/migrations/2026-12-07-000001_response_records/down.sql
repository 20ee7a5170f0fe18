-- Back to one JSON body per response: rows written as records get a body in the shape the API
-- answered (the fields this table keeps; the constant ones as the API writes them).
DROP TRIGGER responses_record_from_body ON responses;
DROP FUNCTION responses_record_from_body();
UPDATE responses SET body = jsonb_build_object(
    'id', id,
    'object', 'response',
    'created_at', extract(epoch FROM created_at)::bigint,
    'status', 'completed',
    'error', NULL,
    'incomplete_details', NULL,
    'instructions', instructions,
    'max_output_tokens', max_output_tokens,
    'model', model,
    'output', jsonb_build_array(jsonb_build_object(
        'type', 'message', 'id', 'msg_' || substr(id, 6), 'status', 'completed', 'role', 'assistant',
        'content', jsonb_build_array(jsonb_build_object(
            'type', 'output_text', 'text', output_text, 'annotations', '[]'::jsonb)))),
    'parallel_tool_calls', true,
    'previous_response_id', previous_response_id,
    'reasoning', jsonb_build_object('effort', NULL, 'summary', NULL),
    'store', true,
    'temperature', temperature,
    'text', jsonb_build_object('format', COALESCE(text_format, '{"type": "text"}'::jsonb)),
    'tool_choice', 'auto',
    'tools', '[]'::jsonb,
    'top_p', top_p,
    'truncation', 'disabled',
    'usage', jsonb_build_object(
        'input_tokens', prompt_tokens,
        'input_tokens_details', jsonb_build_object('cached_tokens', 0),
        'output_tokens', completion_tokens,
        'output_tokens_details', jsonb_build_object('reasoning_tokens', 0),
        'total_tokens', prompt_tokens + completion_tokens),
    'user', user_name,
    'metadata', metadata)::text
WHERE body IS NULL;
ALTER TABLE responses
    ALTER COLUMN body SET NOT NULL,
    DROP COLUMN model,
    DROP COLUMN instructions,
    DROP COLUMN previous_response_id,
    DROP COLUMN temperature,
    DROP COLUMN top_p,
    DROP COLUMN max_output_tokens,
    DROP COLUMN user_name,
    DROP COLUMN metadata,
    DROP COLUMN text_format,
    DROP COLUMN output_text,
    DROP COLUMN prompt_tokens,
    DROP COLUMN completion_tokens;
