//! The fields of the entries of the file's tables (`[[http_tools]]`, `[[mcp_servers]]`,
//! `[[webhooks]]`, `[[agents]]`, `[[models]]`, `[builtin_tools]`), declared as keys like the
//! others ([`crate::keys`]): their kind and bounds, their default and what they do, for the loaders
//! and for the reference tables of `docs/configuration.md`.

use std::time::Duration;

use crate::keys::{Key, Kind};

const fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

const fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

/// Declares the fields of the entries of a table of the file (`[[http_tools]]`,
/// `[[mcp_servers]]`) as keys: their kind and bounds, their default (`None`: required, or said in
/// the doc) and what they do, for the loaders and for the reference ([`entries_table`]).
macro_rules! entry_fields {
    ($list:ident ($table:literal) {
        $(
            $(#[doc = $doc:literal])+
            $field:ident = $name:ident, $kind:expr, default: $default:expr;
        )+
    }) => {
        $(
            $(#[doc = $doc])+
            pub const $name: Key = Key {
                path: concat!($table, ".", stringify!($field)),
                kind: $kind,
                default: $default,
                aliases: &[],
                doc: concat!($($doc),+),
            };
        )+

        #[doc = concat!("The fields of a `[[", $table, "]]` entry.")]
        pub const $list: &[Key] = &[$($name),+];
    };
}

entry_fields! {
    HTTP_TOOL_FIELDS ("http_tools") {
        /// The tool's name for the model: 1 to 64 of `A-Z a-z 0-9 _ -`, unique. Required.
        name = HTTP_TOOL_NAME, Kind::Text, default: None;
        /// What the tool does, for the model. Required.
        description = HTTP_TOOL_DESCRIPTION, Kind::Text, default: None;
        /// Where the call goes. Required.
        url = HTTP_TOOL_URL, Kind::HttpUrl, default: None;
        /// The arguments' JSON Schema; the model's arguments are checked against it. Required.
        parameters = HTTP_TOOL_PARAMETERS, Kind::JsonSchema, default: None;
        /// `POST` sends the arguments as a JSON body, `GET` as query parameters. Default:
        /// `http_tool_defaults.method`.
        method = HTTP_TOOL_METHOD, Kind::Choice(&["POST", "GET"]), default: None;
        /// Bound on one call. Default: `http_tool_defaults.timeout`.
        timeout = HTTP_TOOL_TIMEOUT, Kind::Duration { min: ms(1), max: secs(600) }, default: None;
        /// The answer is cut to this many bytes. Default: `http_tool_defaults.max_response_bytes`.
        max_response_bytes = HTTP_TOOL_MAX_RESPONSE_BYTES, Kind::Int { min: 1, max: 64 << 20 }, default: None;
        /// Sent with every call; values from files are secrets, never logged.
        headers = HTTP_TOOL_HEADERS, Kind::Headers, default: None;
        /// Whether a call waits for the client's approval before it runs (the filter forms name
        /// the tool itself).
        require_approval = HTTP_TOOL_REQUIRE_APPROVAL, Kind::Approval, default: Some("never");
    }
}

entry_fields! {
    MCP_SERVER_FIELDS ("mcp_servers") {
        /// 1 to 64 of `A-Z a-z 0-9 _ -`, unique; its readiness check is `mcp:<name>`. Required.
        name = MCP_SERVER_NAME, Kind::Text, default: None;
        /// The server's Streamable HTTP endpoint. Required.
        url = MCP_SERVER_URL, Kind::HttpUrl, default: None;
        /// Sent with every request (bearer tokens); values from files are secrets, never logged.
        headers = MCP_SERVER_HEADERS, Kind::Headers, default: None;
        /// Its tools are named `<prefix>__<tool>`; two servers may not share one. Default: the
        /// name.
        prefix = MCP_SERVER_PREFIX, Kind::Text, default: None;
        /// Only these of its tools. Default: all of them.
        tools = MCP_SERVER_TOOLS, Kind::Names, default: None;
        /// Bound on one tool call.
        timeout = MCP_SERVER_TIMEOUT, Kind::Duration { min: ms(1), max: secs(3600) }, default: Some("30s");
        /// Bound on connecting and initialising the session.
        connect_timeout = MCP_SERVER_CONNECT_TIMEOUT, Kind::Duration { min: ms(1), max: secs(300) }, default: Some("5s");
        /// Readiness fails while it is unavailable (otherwise it is reported degraded).
        required = MCP_SERVER_REQUIRED, Kind::Bool, default: Some("false");
        /// The tool message is cut to this many bytes. Default:
        /// `http_tool_defaults.max_response_bytes`.
        max_result_bytes = MCP_SERVER_MAX_RESULT_BYTES, Kind::Int { min: 1, max: 64 << 20 }, default: None;
        /// How often its tool list is fetched again, besides its `tools/list_changed`
        /// notifications.
        refresh_interval = MCP_SERVER_REFRESH_INTERVAL, Kind::Duration { min: secs(1), max: secs(24 * 3600) }, default: Some("5m");
        /// Which of its tools (by the server's own names, without the prefix) wait for the
        /// client's approval before a call runs.
        require_approval = MCP_SERVER_REQUIRE_APPROVAL, Kind::Approval, default: Some("never");
    }
}

entry_fields! {
    AGENT_FIELDS ("agents") {
        /// How requests (`"agent"`) and OpenAI clients (`model`) name it: 1 to 64 of `a-z 0-9 _ -`,
        /// unique. Required.
        id = AGENTS_ID, Kind::Text, default: None;
        /// Its display name. Default: the id.
        name = AGENTS_NAME, Kind::Text, default: None;
        /// What it does, shown to MCP and A2A clients.
        description = AGENTS_DESCRIPTION, Kind::Text, default: None;
        /// Its system prompt, inline or `{ file = "/path" }`. Default: `turn.system_prompt`.
        instructions = AGENTS_INSTRUCTIONS, Kind::Text, default: None;
        /// The first model of its chain: a `[[models]]` name, or a model on the default model
        /// server. Default: `model.name`.
        model = AGENTS_MODEL, Kind::Text, default: None;
        /// The models tried in order when the one before fails (a timeout, a connection failure,
        /// 408, 429, 5xx), named as `model` is.
        fallbacks = AGENTS_FALLBACKS, Kind::Names, default: None;
        /// Its tools: names or globs (`tickets__*`) of built-in, HTTP and MCP tools. Default: every
        /// tool.
        tools = AGENTS_TOOLS, Kind::Names, default: None;
        /// Model calls per turn. Default: `turn.max_steps`.
        max_steps = AGENTS_MAX_STEPS, Kind::Int { min: 1, max: 100 }, default: None;
        /// Tokens one turn may use. Default: `turn.turn_token_budget`.
        turn_token_budget = AGENTS_TURN_TOKEN_BUDGET, Kind::Int { min: 1, max: u64::MAX / 4 }, default: None;
        /// Wall time per turn. Default: `turn.turn_deadline`.
        turn_deadline = AGENTS_TURN_DEADLINE, Kind::Duration { min: ms(1), max: secs(3600) }, default: None;
        /// Sampling temperature, 0 to 2. Default: `model.temperature`.
        temperature = AGENTS_TEMPERATURE, Kind::Float { min: 0.0, max: 2.0 }, default: None;
        /// The callers (API key names) who may use it. Default: every caller.
        callers = AGENTS_CALLERS, Kind::Names, default: None;
        /// Its context policy; each key it leaves out is the global `context.*` one.
        context = AGENTS_CONTEXT, Kind::Context, default: None;
    }
}

entry_fields! {
    MODEL_FIELDS ("models") {
        /// What chains call it: 1 to 128 of `A-Z a-z 0-9 . _ : / -`, unique. Required.
        name = MODELS_NAME, Kind::Text, default: None;
        /// The OpenAI-compatible server, with its `/v1`. Required.
        base_url = MODELS_BASE_URL, Kind::HttpUrl, default: None;
        /// The model's id on that server. Required.
        model = MODELS_MODEL, Kind::Text, default: None;
        /// Its API key, `{ file = "/path" }` or inline (warned about in the `production`
        /// profile); never printed. Default: none.
        api_key = MODELS_API_KEY, Kind::Secret, default: None;
        /// Sent with every call; values from files are secrets, never logged.
        headers = MODELS_HEADERS, Kind::Headers, default: None;
        /// Bound on one call. Default: `model.request_timeout`.
        request_timeout = MODELS_REQUEST_TIMEOUT, Kind::Duration { min: ms(1), max: secs(3600) }, default: None;
        /// Attempts of one call, retries included. Default: `model.max_attempts`.
        max_attempts = MODELS_MAX_ATTEMPTS, Kind::Int { min: 1, max: 20 }, default: None;
    }
}

entry_fields! {
    BUILTIN_TOOL_FIELDS ("builtin_tools") {
        /// Which built-in tools (`calculator`, `current_time`) wait for the client's approval
        /// before a call runs.
        require_approval = BUILTIN_TOOLS_REQUIRE_APPROVAL, Kind::Approval, default: Some("never");
    }
}

entry_fields! {
    WEBHOOK_FIELDS ("webhooks") {
        /// Where the events are posted (the operator's choice: loopback included; clients never
        /// name these URLs). Unique. Required.
        url = WEBHOOK_URL, Kind::HttpUrl, default: None;
        /// The Standard Webhooks signing secret (`whsec_` and base64), or several (one `v1,`
        /// signature each: rotation). Inline secrets draw a warning in the `production`
        /// profile. Required.
        secret = WEBHOOK_SECRET, Kind::WebhookSecrets, default: None;
        /// Which events: `response.completed`, `response.failed`, `response.cancelled`,
        /// `response.requires_action`. Default: all of them.
        events = WEBHOOK_EVENTS, Kind::Names, default: None;
        /// Only the runs of these callers. Default: every caller's.
        callers = WEBHOOK_CALLERS, Kind::Names, default: None;
    }
}

/// The reference of a table's entries: one Markdown table row per field, generated from
/// [`HTTP_TOOL_FIELDS`] or [`MCP_SERVER_FIELDS`].
pub fn entries_table(fields: &[Key]) -> String {
    let mut table =
        String::from("| Field | Values | Default | What it does |\n| --- | --- | --- | --- |\n");
    for key in fields {
        let field = key.path.rsplit('.').next().unwrap_or(key.path);
        let default = key
            .default
            .map_or_else(|| "—".to_owned(), |default| format!("`{default}`"));
        table.push_str(&format!(
            "| `{field}` | {} | {default} | {} |\n",
            key.kind.describe(),
            key.table_cell()
        ));
    }
    table
}
