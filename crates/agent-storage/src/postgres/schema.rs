//! The diesel table definitions, matching `migrations/`.

diesel::table! {
    sessions (id) {
        id -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        next_sequence -> Int8,
        turn_count -> Int8,
        prompt_tokens -> Int8,
        completion_tokens -> Int8,
        /// Generated from `id`: the caller before `:`, else `anonymous`.
        owner -> Text,
        /// The agent of its first turn (null: stored before agents were named).
        agent -> Nullable<Text>,
        /// The summary standing in for the messages before `summary_through` (compaction).
        summary -> Nullable<Text>,
        summary_through -> Nullable<Int8>,
    }
}

diesel::table! {
    messages (session_id, sequence) {
        session_id -> Text,
        sequence -> Int8,
        role -> Text,
        content -> Text,
        tool_calls -> Nullable<Jsonb>,
        tool_call_id -> Nullable<Text>,
        tokens -> Nullable<Int8>,
        created_at -> Timestamptz,
        /// What the message takes of a model's context (null: not counted).
        context_tokens -> Nullable<Int8>,
    }
}

diesel::table! {
    idempotency_records (key) {
        key -> Text,
        fingerprint -> Text,
        response -> Nullable<Text>,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
    }
}

diesel::table! {
    usage_daily (owner, day, agent, shard) {
        owner -> Text,
        day -> Date,
        shard -> Int2,
        turns -> Int8,
        prompt_tokens -> Int8,
        completion_tokens -> Int8,
        /// The agent of the turns ('' before agents were named).
        agent -> Text,
    }
}

diesel::table! {
    responses (id) {
        id -> Text,
        session_id -> Text,
        sequence -> Int8,
        created_at -> Timestamptz,
        model -> Text,
        instructions -> Nullable<Text>,
        previous_response_id -> Nullable<Text>,
        temperature -> Nullable<Float4>,
        top_p -> Nullable<Float4>,
        max_output_tokens -> Nullable<Int4>,
        user_name -> Nullable<Text>,
        metadata -> Jsonb,
        text_format -> Nullable<Jsonb>,
        output_text -> Text,
        prompt_tokens -> Int8,
        completion_tokens -> Int8,
    }
}

diesel::table! {
    runs (id) {
        id -> Text,
        owner -> Text,
        session_id -> Nullable<Text>,
        status -> Text,
        background -> Bool,
        created_at -> Timestamptz,
        started_at -> Nullable<Timestamptz>,
        finished_at -> Nullable<Timestamptz>,
        lease_holder -> Nullable<Text>,
        lease_expires_at -> Nullable<Timestamptz>,
        error_code -> Nullable<Text>,
        error_message -> Nullable<Text>,
        output_text -> Nullable<Text>,
        prompt_tokens -> Int8,
        completion_tokens -> Int8,
        input -> Nullable<Jsonb>,
    }
}

diesel::table! {
    run_actions (run_id) {
        run_id -> Text,
        pending -> Jsonb,
        expires_at -> Timestamptz,
        version -> Int8,
    }
}

diesel::joinable!(messages -> sessions (session_id));
diesel::joinable!(responses -> sessions (session_id));
diesel::joinable!(run_actions -> runs (run_id));
diesel::allow_tables_to_appear_in_same_query!(
    sessions,
    messages,
    usage_daily,
    responses,
    runs,
    run_actions
);
