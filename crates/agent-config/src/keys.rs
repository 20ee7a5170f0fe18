//! The declaration of every configuration key, each in one place: its TOML path (its section and
//! its field), the Rust type it loads into, its kind and bounds, its built-in default, the
//! tutorial's environment names for it, whether it is a secret (secrets accept `<NAME>_FILE` and
//! are never printed) and what it does. The section structs, loading, validation, `_FILE`
//! support, unknown-variable warnings, `config check`, the configuration reference in
//! `docs/configuration.md` and the check of `.env.example` are all driven by this one table: a
//! setting is added by one declaration here.

use std::time::Duration;

use secrecy::SecretString;
use url::Url;

pub use crate::entry_keys::*;

/// One configuration key.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// Dotted path in the TOML file, e.g. `server.port`.
    pub path: &'static str,
    /// What values it takes; secrets are the `Secret*` kinds.
    pub kind: Kind,
    /// The built-in default as text, or `None` when unset by default.
    pub default: Option<&'static str>,
    /// Unprefixed environment names kept from the Python tutorial, e.g. `PORT`.
    pub aliases: &'static [&'static str],
    /// What the key does, for the configuration reference.
    pub doc: &'static str,
}

/// The type and bounds of a key's value. Every value arrives as text (the environment's
/// provider keeps strings, so `007` stays `007`) and is typed by the validation in `load.rs`.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    Bool,
    /// A whole number within the bounds.
    Int { min: u64, max: u64 },
    /// A number within the bounds.
    Float { min: f32, max: f32 },
    /// A humantime duration (`250ms`, `5s`, `24h`) within the bounds.
    Duration { min: Duration, max: Duration },
    /// Free text.
    Text,
    /// One of the names, case-insensitive; `a|b` accepts `b` as another name for `a`.
    Choice(&'static [&'static str]),
    /// An IP address or `localhost`.
    Host,
    /// A port number; 0 asks the OS for a free one.
    Port,
    /// An `http(s)` URL.
    HttpUrl,
    /// A secret string.
    Secret,
    /// A secret, comma-separated list.
    SecretList,
    /// A secret URL with one of the schemes (the first is the one to suggest).
    SecretUrl(&'static [&'static str]),
    /// A table entry's header values: `Name = "value"`, or `{ file = "/path" }` (a secret read
    /// from the file).
    Headers,
    /// A list of names.
    Names,
    /// Webhook signing secrets: `"whsec_…"`, `{ file = "/path" }`, or a list of them.
    WebhookSecrets,
    /// A JSON Schema object (or its JSON text).
    JsonSchema,
    /// `"always"`, `"never"`, `{ always = { tool_names = [...] } }` or `{ never = { tool_names =
    /// [...] } }`.
    Approval,
    /// A table of the `context.*` keys (an agent's own context policy).
    Context,
}

impl Key {
    /// Secrets accept `<NAME>_FILE` and are never printed.
    pub fn is_secret(&self) -> bool {
        matches!(
            self.kind,
            Kind::Secret | Kind::SecretList | Kind::SecretUrl(_)
        )
    }

    /// The prefixed environment name: `AGENT_` + path in upper case with `__` for nesting.
    pub fn prefixed_env_name(&self) -> String {
        format!(
            "AGENT_{}",
            self.path.replace('.', "__").to_ascii_uppercase()
        )
    }

    /// Every environment name for this key, the prefixed one first (it wins over an alias).
    pub fn env_names(&self) -> Vec<String> {
        let mut names = vec![self.prefixed_env_name()];
        names.extend(self.aliases.iter().map(|alias| (*alias).to_owned()));
        names
    }

    /// The description on one line, as a Markdown table cell.
    pub(crate) fn table_cell(&self) -> String {
        let doc = self.doc.split_whitespace().collect::<Vec<_>>().join(" ");
        doc.replace('|', "\\|")
    }

    /// The name to show a user for this key: the tutorial's name if there is one.
    pub fn display_name(&self) -> String {
        self.aliases
            .first()
            .map(|alias| (*alias).to_owned())
            .unwrap_or_else(|| self.prefixed_env_name())
    }
}

impl Kind {
    /// The values it takes, in words, for the configuration reference.
    pub fn describe(&self) -> String {
        match self {
            Self::Bool => "true or false".to_owned(),
            Self::Int { min, max } => format!("whole number, {min} to {max}"),
            Self::Float { min, max } => format!("number, {min} to {max}"),
            Self::Duration { min, max } => format!(
                "duration, {} to {}",
                humantime::format_duration(*min),
                humantime::format_duration(*max)
            ),
            Self::Text => "text".to_owned(),
            Self::Choice(names) => names
                .iter()
                .map(|name| match name.split_once('|') {
                    Some((name, others)) => {
                        format!("`{name}` (or `{}`)", others.replace('|', "`, `"))
                    }
                    None => format!("`{name}`"),
                })
                .collect::<Vec<_>>()
                .join(", "),
            Self::Host => "IP address or `localhost`".to_owned(),
            Self::Port => "port, 0 to 65535 (0: any free port)".to_owned(),
            Self::HttpUrl => "http(s) URL".to_owned(),
            Self::Secret => "secret".to_owned(),
            Self::SecretList => "secret, comma-separated".to_owned(),
            Self::SecretUrl(schemes) => format!("secret URL ({}://)", schemes.join("://, ")),
            Self::Headers => "table of `Name = \"value\"` or `{ file = \"/path\" }`".to_owned(),
            Self::Names => "list of names".to_owned(),
            Self::WebhookSecrets => {
                "`\"whsec_…\"` or `{ file = \"/path\" }`, or a list of them".to_owned()
            }
            Self::JsonSchema => "JSON Schema object".to_owned(),
            Self::Approval => {
                "`\"always\"`, `\"never\"`, `{ always = { tool_names = [...] } }` or \
                 `{ never = { tool_names = [...] } }`"
                    .to_owned()
            }
            Self::Context => {
                "table of `context.*` keys (`{ max_input_tokens = 100000, … }`)".to_owned()
            }
        }
    }
}

const fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

const fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

/// Declares every key once: its constant (for `load.rs` and the tests), its place in [`KEYS`],
/// and its field, with its Rust type, in the section struct its value is loaded into. A key's
/// path is its section's prefix and its field's name, so the two cannot drift apart.
macro_rules! sections {
    ($(
        $(#[doc = $section_doc:literal])+
        $section:ident ($prefix:literal) {
            $(
                $(#[doc = $doc:literal])+
                $field:ident: $type:ty = $name:ident, $kind:expr, default: $default:expr, aliases: [$($alias:literal),*];
            )+
        }
    )+) => {
        $($(
            $(#[doc = $doc])+
            pub const $name: Key = Key {
                path: concat!($prefix, stringify!($field)),
                kind: $kind,
                default: $default,
                aliases: &[$($alias),*],
                doc: concat!($($doc),+),
            };
        )+)+

        /// Every key the service understands, in the order of the configuration reference.
        pub const KEYS: &[Key] = &[$($($name),+),+];

        $(
            $(#[doc = $section_doc])+
            #[derive(Debug, Clone)]
            pub struct $section {
                $(
                    $(#[doc = $doc])+
                    pub $field: $type,
                )+
            }

            impl $section {
                /// Every key of the section, read from the layers and checked against its
                /// declaration.
                pub(crate) fn load(layers: &crate::load::Layers) -> Result<Self, crate::ConfigError> {
                    Ok(Self {
                        $($field: crate::load::FromKey::from_key(layers, &$name)?,)+
                    })
                }
            }
        )+
    };
}

sections! {
    /// The top-level keys: the profile, logging, streaming and the API keys; turned into
    /// [`crate::Settings`]' own fields.
    RootValues ("") {
        /// `dev` falls back to in-memory storage and the offline model when nothing is configured;
        /// `production` refuses to start without `DATABASE_URL`, `REDIS_URL` and a model.
        profile: &'static str = PROFILE, Kind::Choice(&["dev|development", "production|prod"]), default: Some("dev"), aliases: [];
        /// `auto`: JSON when standard output is not a terminal, readable text when it is.
        log_format: &'static str = LOG_FORMAT, Kind::Choice(&["auto", "json", "pretty|text"]), default: Some("auto"), aliases: [];
        /// The cause chain of a failed request (5xx) is logged once per distinct failure per
        /// interval, with the request id of the first and how many were suppressed since; metrics
        /// and the access lines still count every one. 0s logs every one.
        log_repeat_interval: Duration = LOG_REPEAT_INTERVAL, Kind::Duration { min: Duration::ZERO, max: secs(3600) }, default: Some("10s"), aliases: [];
        /// `true` adds one log line each time a span closes, with its busy and idle time: the request,
        /// and (debug-level spans, enabled by this switch unless `RUST_LOG` is set) the turn, each
        /// model call, each tool call and each storage operation. `false` also turns OTLP trace export
        /// off, even with an endpoint set. Unset: no span lines; traces are exported when an endpoint
        /// is set.
        enable_tracing: Option<bool> = ENABLE_TRACING, Kind::Bool, default: None, aliases: ["ENABLE_TRACING"];
        /// Serves `POST /agent/stream`.
        enable_streaming: bool = ENABLE_STREAMING, Kind::Bool, default: Some("true"), aliases: ["ENABLE_STREAMING"];
        /// The agent a request that names none goes to (an `[[agents]]` id); unset: the first
        /// entry. Without `[[agents]]` the one agent is the global settings'.
        default_agent: Option<String> = DEFAULT_AGENT, Kind::Text, default: None, aliases: [];
        /// Bearer keys accepted by the API, each `name:key` (keys sharing a caller name are one
        /// caller: rotation) or a plain `key` (a caller of its own); when set, every route except the
        /// probes (and `/metrics` unless `api.metrics_require_auth`) needs one. Unset: no auth.
        api_keys: Option<SecretString> = API_KEYS, Kind::SecretList, default: None, aliases: [];
    }
    /// OTLP trace export, as configured; turned into [`crate::TraceSettings`].
    TelemetryValues ("telemetry.") {
        /// The OTLP/HTTP collector traces are exported to (`/v1/traces` is appended), e.g.
        /// `http://otel-collector:4318`. Unset (and no traces endpoint): no traces are exported.
        otlp_endpoint: Option<Url> = TELEMETRY_OTLP_ENDPOINT, Kind::HttpUrl, default: None, aliases: ["OTEL_EXPORTER_OTLP_ENDPOINT"];
        /// The full URL traces are posted to; wins over `telemetry.otlp_endpoint`.
        otlp_traces_endpoint: Option<Url> = TELEMETRY_OTLP_TRACES_ENDPOINT, Kind::HttpUrl, default: None, aliases: ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"];
        /// Headers sent with every export, `name=value` pairs separated by commas, values
        /// percent-encoded (`Authorization=Bearer%20abc`).
        otlp_headers: Option<SecretString> = TELEMETRY_OTLP_HEADERS, Kind::Secret, default: None, aliases: ["OTEL_EXPORTER_OTLP_HEADERS"];
        /// The export protocol: OTLP over HTTP with protobuf bodies (gRPC is not built in).
        otlp_protocol: &'static str = TELEMETRY_OTLP_PROTOCOL, Kind::Choice(&["http/protobuf"]), default: Some("http/protobuf"), aliases: ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"];
        /// Bound on one export request.
        otlp_timeout: Duration = TELEMETRY_OTLP_TIMEOUT, Kind::Duration { min: ms(1), max: secs(60) }, default: Some("10s"), aliases: [];
        /// `service.name` of every span.
        service_name: String = TELEMETRY_SERVICE_NAME, Kind::Text, default: Some("agent-server"), aliases: ["OTEL_SERVICE_NAME"];
        /// More resource attributes, `key=value` pairs separated by commas (values percent-encoded),
        /// e.g. `deployment.environment.name=prod,service.namespace=agents`.
        resource_attributes: String = TELEMETRY_RESOURCE_ATTRIBUTES, Kind::Text, default: None, aliases: ["OTEL_RESOURCE_ATTRIBUTES"];
        /// Which requests are traced, decided once per request: `parentbased_*` follows an incoming
        /// `traceparent`'s sampled flag and applies the rest to new traces; `*traceidratio` keeps
        /// `telemetry.sampler_arg` of them, drawn at random.
        sampler: &'static str = TELEMETRY_SAMPLER, Kind::Choice(&["parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio", "always_on", "always_off", "traceidratio"]), default: Some("parentbased_always_on"), aliases: ["OTEL_TRACES_SAMPLER"];
        /// The ratio of new traces kept by the `*traceidratio` samplers.
        sampler_arg: f32 = TELEMETRY_SAMPLER_ARG, Kind::Float { min: 0.0, max: 1.0 }, default: Some("1.0"), aliases: ["OTEL_TRACES_SAMPLER_ARG"];
        /// Spans waiting for export; when full (a slow or dead collector) new spans are dropped and
        /// counted in `agent_trace_spans_dropped_total`, and requests are never slowed.
        max_queue_size: usize = TELEMETRY_MAX_QUEUE_SIZE, Kind::Int { min: 16, max: 1_000_000 }, default: Some("2048"), aliases: ["OTEL_BSP_MAX_QUEUE_SIZE"];
        /// Records message and tool contents in spans (`gen_ai.input.messages`,
        /// `gen_ai.output.messages`, tool arguments and results). Off by default: they may hold
        /// personal data. Secrets (keys, configured headers) are never recorded.
        capture_content: bool = TELEMETRY_CAPTURE_CONTENT, Kind::Bool, default: Some("false"), aliases: [];
    }
    /// The API, as configured; [`crate::ApiSettings`] adds what is built from several of these.
    ApiValues ("api.") {
        /// Largest request body in bytes (413 above it).
        max_body_bytes: usize = API_MAX_BODY_BYTES, Kind::Int { min: 1024, max: 64 << 20 }, default: Some("65536"), aliases: [];
        /// Longest user message in characters (422 above it).
        max_message_chars: usize = API_MAX_MESSAGE_CHARS, Kind::Int { min: 1, max: 1 << 20 }, default: Some("32000"), aliases: [];
        /// How long a request waits for another request on the same session before answering 409.
        lock_wait: Duration = API_LOCK_WAIT, Kind::Duration { min: Duration::ZERO, max: secs(600) }, default: Some("10s"), aliases: [];
        /// How long a completed `Idempotency-Key`'s response is kept for replays.
        idempotency_retention: Duration = API_IDEMPOTENCY_RETENTION, Kind::Duration { min: secs(1), max: secs(30 * 24 * 3600) }, default: Some("24h"), aliases: [];
        /// Comment lines sent on idle event streams so proxies keep them open.
        sse_keepalive: Duration = API_SSE_KEEPALIVE, Kind::Duration { min: ms(100), max: secs(600) }, default: Some("15s"), aliases: [];
        /// Whether `GET /metrics` needs an API key too (the probes never do).
        metrics_require_auth: bool = API_METRICS_REQUIRE_AUTH, Kind::Bool, default: Some("false"), aliases: [];
        /// Take the client address for rate limits from `X-Forwarded-For` (only behind a trusted
        /// proxy).
        trust_forwarded_for: bool = API_TRUST_FORWARDED_FOR, Kind::Bool, default: Some("false"), aliases: [];
        /// Callers (API key names) who may read every caller's usage at `GET /usage`,
        /// comma-separated; everyone else reads their own.
        usage_readers: String = API_USAGE_READERS, Kind::Text, default: None, aliases: [];
        /// Tokens (prompt and completion) each caller may use per UTC day, counted from its stored
        /// turns across every replica; a caller at its quota gets `429 quota_exceeded` with
        /// `Retry-After` until the next UTC midnight. Turns already running when it is reached finish
        /// and are counted. 0: no quota.
        daily_token_quota: u64 = API_DAILY_TOKEN_QUOTA, Kind::Int { min: 0, max: u64::MAX / 4 }, default: Some("0"), aliases: [];
        /// Quotas of named callers, overriding `api.daily_token_quota`: `name:tokens`,
        /// comma-separated (`ci:200000,alice:0`; 0: no quota for that caller).
        daily_token_quotas: String = API_DAILY_TOKEN_QUOTAS, Kind::Text, default: None, aliases: [];
        /// Adds a `caller` label (the key's name, never the key) to the turn and token metrics. The
        /// callers are the configured key names (plus `anonymous`), so the labels stay bounded; off
        /// by default because each caller multiplies those series.
        metrics_caller_labels: bool = API_METRICS_CALLER_LABELS, Kind::Bool, default: Some("false"), aliases: [];
        /// `GET /docs`: interactive API documentation (Swagger UI, served from the binary) of
        /// `/openapi.json`. While on, the page, its assets and `/openapi.json` are served without a
        /// key (a browser cannot send one to open a page); the calls it makes use the key entered in
        /// it. Unset: on in the `dev` profile, off in `production`.
        docs_page: Option<bool> = API_DOCS_PAGE, Kind::Bool, default: None, aliases: [];
        /// `GET /playground`: a chat page (served from the binary) that talks to the agent with the
        /// key entered in it, streaming answers and tool calls, listing and deleting the caller's
        /// sessions; `GET /` leads to it. While on, the page, its assets and `/` are served without a
        /// key; every call it makes uses the entered key. Unset: on in the `dev` profile, off in
        /// `production`.
        playground_page: Option<bool> = API_PLAYGROUND_PAGE, Kind::Bool, default: None, aliases: [];
        /// Browser origins allowed to call the API (CORS), comma-separated (`https://app.example.com`),
        /// or `*` for any; unset: CORS is off and preflights are refused.
        cors_allowed_origins: String = API_CORS_ALLOWED_ORIGINS, Kind::Text, default: None, aliases: [];
        /// Methods a cross-origin request may use.
        cors_allowed_methods: String = API_CORS_ALLOWED_METHODS, Kind::Text, default: Some("GET, POST, DELETE"), aliases: [];
        /// Request headers a cross-origin request may send.
        cors_allowed_headers: String = API_CORS_ALLOWED_HEADERS, Kind::Text, default: Some("authorization, content-type, idempotency-key, x-request-id"), aliases: [];
        /// Whether browsers may send credentials (cookies, HTTP auth) cross-origin; never with `*`.
        cors_allow_credentials: bool = API_CORS_ALLOW_CREDENTIALS, Kind::Bool, default: Some("false"), aliases: [];
        /// How long browsers may cache a preflight's answer.
        cors_max_age: Duration = API_CORS_MAX_AGE, Kind::Duration { min: Duration::ZERO, max: secs(24 * 3600) }, default: Some("10m"), aliases: [];
    }
    /// The OpenAI-compatible API, as configured.
    OpenAiApiValues ("openai_api.") {
        /// The id of the one agent of a deployment without `[[agents]]`: the model the
        /// OpenAI-compatible API (`/v1/models`, `/v1/chat/completions`) presents it as (requests
        /// naming another model get 404 `model_not_found`). With `[[agents]]`, their ids.
        model_id: String = OPENAI_API_MODEL_ID, Kind::Text, default: Some("agent"), aliases: [];
        /// Largest request body of the `/v1/*` routes in bytes: OpenAI clients send whole histories.
        max_body_bytes: usize = OPENAI_API_MAX_BODY_BYTES, Kind::Int { min: 1024, max: 64 << 20 }, default: Some("1048576"), aliases: [];
        /// What a `system` or `developer` message of a `/v1/chat/completions` request does: `follow`
        /// (kept where the client put it, after the server's system prompt) or `refuse` (400).
        system_messages: &'static str = OPENAI_API_SYSTEM_MESSAGES, Kind::Choice(&["follow", "refuse"]), default: Some("follow"), aliases: [];
    }
    /// Rate limits per API key (or client address), shared across replicas through Redis.
    RateLimitSettings ("rate_limit.") {
        /// Requests per window per API key (or per client address without keys), shared across
        /// replicas through Redis; 0 turns rate limits off.
        requests: u32 = RATE_LIMIT_REQUESTS, Kind::Int { min: 0, max: 1_000_000_000 }, default: Some("120"), aliases: [];
        /// The rate-limit window.
        window: Duration = RATE_LIMIT_WINDOW, Kind::Duration { min: ms(1), max: secs(24 * 3600) }, default: Some("60s"), aliases: [];
    }
    /// How the server listens, how many workers serve, how it stops, and its admission limits.
    ServerSettings ("server.") {
        /// Listen address (the container image sets `0.0.0.0`).
        host: String = SERVER_HOST, Kind::Host, default: Some("127.0.0.1"), aliases: ["HOST"];
        /// Listen port.
        port: u16 = SERVER_PORT, Kind::Port, default: Some("8000"), aliases: ["PORT"];
        /// HTTP worker threads; 0 means one per available CPU.
        workers: usize = SERVER_WORKERS, Kind::Int { min: 0, max: 1024 }, default: Some("0"), aliases: ["WORKERS"];
        /// After SIGTERM, readiness fails at once; new connections are still accepted for this long
        /// so load balancers can notice, then the listener closes.
        shutdown_delay: Duration = SERVER_SHUTDOWN_DELAY, Kind::Duration { min: Duration::ZERO, max: secs(60) }, default: Some("1s"), aliases: [];
        /// Then in-flight requests get this long to finish. Keep delay + drain under the
        /// orchestrator's grace period (Docker: 10 s).
        drain_timeout: Duration = SERVER_DRAIN_TIMEOUT, Kind::Duration { min: Duration::ZERO, max: secs(600) }, default: Some("8s"), aliases: [];
        /// Connections served at once; beyond it a connection's requests (except the probes and
        /// `/metrics`) get `503 overloaded` with `Retry-After` and the connection is closed. 0: sized
        /// from the descriptor limit, after the pools, the upstream calls of the turns in flight and
        /// a band for refusing (see docs/operations.md). Lowered to fit the descriptors if need be.
        max_connections: usize = SERVER_MAX_CONNECTIONS, Kind::Int { min: 0, max: 1_000_000 }, default: Some("0"), aliases: [];
        /// Turns (`POST /agent`, `POST /agent/stream`) running at once; beyond it a turn gets
        /// `503 overloaded` with `Retry-After`. 0: half the connection limit, at most 10,000.
        max_turns_in_flight: usize = SERVER_MAX_TURNS_IN_FLIGHT, Kind::Int { min: 0, max: 1_000_000 }, default: Some("0"), aliases: [];
        /// The `Retry-After` of an `overloaded` answer.
        overload_retry_after: Duration = SERVER_OVERLOAD_RETRY_AFTER, Kind::Duration { min: secs(1), max: secs(3600) }, default: Some("1s"), aliases: [];
    }
    /// The model, as configured; [`crate::ModelSettings`] adds the provider they make.
    ModelValues ("model.") {
        /// `auto`: an OpenAI-compatible server when `OPENAI_API_KEY` or `OPENAI_BASE_URL` is set,
        /// otherwise the built-in offline model (dev profile only). `openai` or `offline` force one.
        provider: &'static str = MODEL_PROVIDER, Kind::Choice(&["auto", "openai", "offline"]), default: Some("auto"), aliases: [];
        /// The OpenAI-compatible server, including `/v1` (e.g. `http://localhost:11434/v1` for
        /// Ollama).
        base_url: Url = MODEL_BASE_URL, Kind::HttpUrl, default: Some("https://api.openai.com/v1"), aliases: ["OPENAI_BASE_URL"];
        /// The model server's key; optional for local servers (vLLM, Ollama, llama.cpp).
        api_key: Option<SecretString> = MODEL_API_KEY, Kind::Secret, default: None, aliases: ["OPENAI_API_KEY"];
        /// The model name sent with each call.
        name: String = MODEL_NAME, Kind::Text, default: Some("gpt-4o-mini"), aliases: ["MODEL_NAME"];
        /// Sampling temperature.
        temperature: f32 = MODEL_TEMPERATURE, Kind::Float { min: 0.0, max: 2.0 }, default: Some("0.7"), aliases: ["TEMPERATURE"];
        /// Most tokens one model call may produce.
        max_tokens: u32 = MODEL_MAX_TOKENS, Kind::Int { min: 1, max: 1_000_000 }, default: Some("1000"), aliases: ["MAX_TOKENS"];
        /// Bound on one model call until it starts answering, and on any pause while it streams.
        request_timeout: Duration = MODEL_REQUEST_TIMEOUT, Kind::Duration { min: ms(1), max: secs(3600) }, default: Some("60s"), aliases: [];
        /// Attempts in all for one model call on 408, 429, 5xx and connection failures (1: no retry).
        max_attempts: u32 = MODEL_MAX_ATTEMPTS, Kind::Int { min: 1, max: 20 }, default: Some("3"), aliases: [];
        /// The first backoff between attempts (doubling, each pause stretched by up to 100 % at random; a `Retry-After` or
        /// `retry-after-ms` header wins).
        retry_base_delay: Duration = MODEL_RETRY_BASE_DELAY, Kind::Duration { min: ms(1), max: secs(60) }, default: Some("250ms"), aliases: [];
        /// The longest backoff.
        retry_max_delay: Duration = MODEL_RETRY_MAX_DELAY, Kind::Duration { min: ms(1), max: secs(600) }, default: Some("5s"), aliases: [];
        /// No retry starts after this long; a `Retry-After` beyond it gives up at once.
        retry_budget: Duration = MODEL_RETRY_BUDGET, Kind::Duration { min: Duration::ZERO, max: secs(3600) }, default: Some("20s"), aliases: [];
    }
    /// The bounds of the agent loop.
    TurnSettings ("turn.") {
        /// Model calls per turn.
        max_steps: usize = TURN_MAX_STEPS, Kind::Int { min: 1, max: 100 }, default: Some("8"), aliases: [];
        /// Tool calls of one step running at once (their results keep call order).
        max_parallel_tools: usize = TURN_MAX_PARALLEL_TOOLS, Kind::Int { min: 1, max: 64 }, default: Some("4"), aliases: [];
        /// Tokens one turn may use.
        turn_token_budget: u64 = TURN_TURN_TOKEN_BUDGET, Kind::Int { min: 1, max: u64::MAX / 4 }, default: Some("50000"), aliases: [];
        /// Tokens one session may use in all.
        session_token_budget: u64 = TURN_SESSION_TOKEN_BUDGET, Kind::Int { min: 1, max: u64::MAX / 4 }, default: Some("1000000"), aliases: [];
        /// Wall time per turn.
        turn_deadline: Duration = TURN_TURN_DEADLINE, Kind::Duration { min: ms(1), max: secs(3600) }, default: Some("120s"), aliases: [];
        /// Wall time per tool call.
        tool_timeout: Duration = TURN_TOOL_TIMEOUT, Kind::Duration { min: ms(1), max: secs(600) }, default: Some("10s"), aliases: [];
        /// Messages of earlier history sent with each turn.
        history_window: usize = TURN_HISTORY_WINDOW, Kind::Int { min: 0, max: 1000 }, default: Some("50"), aliases: [];
        /// Bytes of history windows a process keeps of the sessions it stored turns into, so that
        /// their next turn there skips reading the history back (0: off).
        history_cache_bytes: u64 = TURN_HISTORY_CACHE_BYTES, Kind::Int { min: 0, max: 1 << 40 }, default: Some("33554432"), aliases: [];
        /// The system prompt of every turn.
        system_prompt: String = TURN_SYSTEM_PROMPT, Kind::Text, default: Some("You are a helpful assistant. Use the tools when they help, and answer concisely."), aliases: [];
    }
    /// The context policy: what a request to the model may hold, and what happens to a history
    /// that does not fit (each agent may have its own: `context = { … }` in its `[[agents]]`
    /// entry).
    ContextSettings ("context.") {
        /// Tokens a request to the model may hold: instructions, tools, the history and the new
        /// message (counted with the model's tokenizer for OpenAI models, else estimated). 0: no
        /// token budget (the history window alone bounds a request; a model's context-length
        /// refusal still sends less history once).
        max_input_tokens: u64 = CONTEXT_MAX_INPUT_TOKENS, Kind::Int { min: 0, max: 10_000_000 }, default: Some("0"), aliases: [];
        /// What a history over the budget becomes: `truncate` (the newest whole turns that fit),
        /// `compact` (the oldest turns summarised by a model call) or `fail` (the turn is refused,
        /// `context_length_exceeded`).
        strategy: &'static str = CONTEXT_STRATEGY, Kind::Choice(&["truncate", "compact", "fail"]), default: Some("truncate"), aliases: [];
        /// The newest turns never dropped or summarised.
        keep_recent_turns: usize = CONTEXT_KEEP_RECENT_TURNS, Kind::Int { min: 0, max: 1000 }, default: Some("4"), aliases: [];
        /// Tokens of one tool result beyond which it is cut (with a note saying so); with a
        /// budget, at most half of `max_input_tokens`. 0: never cut (with a budget: half of it).
        max_tool_result_tokens: u64 = CONTEXT_MAX_TOOL_RESULT_TOKENS, Kind::Int { min: 0, max: 10_000_000 }, default: Some("0"), aliases: [];
        /// The model that writes summaries (`compact`): a `[[models]]` name or a model on the
        /// default model server. Unset: the agent's own chain.
        summarizer: Option<String> = CONTEXT_SUMMARIZER, Kind::Text, default: None, aliases: [];
    }
    /// Runs: every turn is one; their leases, the queue of background runs, and how long their
    /// events are kept for resumption.
    RunSettings ("runs.") {
        /// How long a run's lease lasts; its replica checks it every quarter of this and renews
        /// it once half is left. A replica that dies leaves its runs to be failed as `run_lost`
        /// within twice this plus 5 s.
        lease: Duration = RUNS_LEASE, Kind::Duration { min: secs(2), max: secs(600) }, default: Some("10s"), aliases: [];
        /// Background runs queued at most, all callers together: past it, `503 overloaded`.
        max_queued: usize = RUNS_MAX_QUEUED, Kind::Int { min: 1, max: 10_000_000 }, default: Some("10000"), aliases: [];
        /// Background runs one caller may have queued: past it, `429 too_many_queued_runs`.
        max_queued_per_caller: usize = RUNS_MAX_QUEUED_PER_CALLER, Kind::Int { min: 1, max: 10_000_000 }, default: Some("100"), aliases: [];
        /// How often each replica looks for queued runs when it has room (a run queued on this
        /// replica is taken at once).
        queue_poll: Duration = RUNS_QUEUE_POLL, Kind::Duration { min: ms(10), max: secs(60) }, default: Some("500ms"), aliases: [];
        /// How long a run's events stay readable (`GET /runs/{id}/events`, a resumed stream) after
        /// its last event; after that its stream answers `410 Gone` (the run's record stays).
        event_retention: Duration = RUNS_EVENT_RETENTION, Kind::Duration { min: secs(1), max: secs(7 * 24 * 3600) }, default: Some("10m"), aliases: [];
        /// The most events one run's log keeps (the oldest go first): bounds a run's log in Redis
        /// and its events held in memory while it runs.
        max_events: usize = RUNS_MAX_EVENTS, Kind::Int { min: 16, max: 1_000_000 }, default: Some("10000"), aliases: [];
        /// How long a run waits for the client's answer to its tool calls (approvals, client-side
        /// tools' outputs) before it fails as `action_expired` (nothing of its turn is stored;
        /// its session is free again).
        action_timeout: Duration = RUNS_ACTION_TIMEOUT, Kind::Duration { min: secs(1), max: secs(30 * 24 * 3600) }, default: Some("24h"), aliases: [];
    }
    /// How webhook events (`[[webhooks]]` in the file) are delivered.
    WebhookDelivery ("webhook_delivery.") {
        /// How long an event is retried (exponential backoff from 1 s, at most an hour apart)
        /// before it is given up.
        retry_for: Duration = WEBHOOK_DELIVERY_RETRY_FOR, Kind::Duration { min: secs(1), max: secs(7 * 24 * 3600) }, default: Some("24h"), aliases: [];
        /// Bound on one delivery attempt (connecting, sending, reading the answer).
        timeout: Duration = WEBHOOK_DELIVERY_TIMEOUT, Kind::Duration { min: ms(10), max: secs(300) }, default: Some("10s"), aliases: [];
        /// Deliveries in flight at once, per replica.
        max_concurrent: usize = WEBHOOK_DELIVERY_MAX_CONCURRENT, Kind::Int { min: 1, max: 1000 }, default: Some("8"), aliases: [];
        /// At most this much of an endpoint's answer is read.
        max_response_bytes: usize = WEBHOOK_DELIVERY_MAX_RESPONSE_BYTES, Kind::Int { min: 0, max: 1 << 20 }, default: Some("4096"), aliases: [];
    }
    /// What an `[[http_tools]]` entry gets when it sets none of its own.
    HttpToolDefaults ("http_tool_defaults.") {
        /// The method of an `[[http_tools]]` entry that sets none.
        method: &'static str = HTTP_TOOL_DEFAULTS_METHOD, Kind::Choice(&["POST", "GET"]), default: Some("POST"), aliases: [];
        /// The timeout of an `[[http_tools]]` entry that sets none.
        timeout: Duration = HTTP_TOOL_DEFAULTS_TIMEOUT, Kind::Duration { min: ms(1), max: secs(600) }, default: Some("10s"), aliases: [];
        /// The response size cap of an `[[http_tools]]` entry that sets none.
        max_response_bytes: usize = HTTP_TOOL_DEFAULTS_MAX_RESPONSE_BYTES, Kind::Int { min: 1, max: 64 << 20 }, default: Some("65536"), aliases: [];
    }
    /// Postgres and Redis, their pools and bounds, and retention.
    StorageSettings ("storage.") {
        /// Postgres for conversations and idempotency records; unset means in memory (dev profile
        /// only).
        database_url: Option<SecretString> = STORAGE_DATABASE_URL, Kind::SecretUrl(&["postgres", "postgresql"]), default: None, aliases: ["DATABASE_URL"];
        /// Redis for session locks and rate limits; unset means in-process (dev profile only).
        redis_url: Option<SecretString> = STORAGE_REDIS_URL, Kind::SecretUrl(&["redis", "rediss"]), default: None, aliases: ["REDIS_URL"];
        /// Postgres connections for requests per process, split evenly between the workers (each
        /// keeps its own pool, at least one connection); two more serve the probes and migrations.
        pool_size: usize = STORAGE_POOL_SIZE, Kind::Int { min: 1, max: 1000 }, default: Some("16"), aliases: [];
        /// Bound on opening a Postgres connection or waiting for a free one.
        connect_timeout: Duration = STORAGE_CONNECT_TIMEOUT, Kind::Duration { min: ms(1), max: secs(300) }, default: Some("3s"), aliases: [];
        /// Server-side bound on each SQL statement.
        statement_timeout: Duration = STORAGE_STATEMENT_TIMEOUT, Kind::Duration { min: ms(1), max: secs(3600) }, default: Some("5s"), aliases: [];
        /// Run pending migrations at startup (under an advisory lock); `false` leaves them to
        /// `agent-server migrate` (a Kubernetes Job, say), and readiness fails while the schema is
        /// behind.
        run_migrations: bool = STORAGE_RUN_MIGRATIONS, Kind::Bool, default: Some("true"), aliases: [];
        /// How long startup keeps retrying an unavailable Postgres (migrations, schema check) before
        /// exiting non-zero.
        startup_timeout: Duration = STORAGE_STARTUP_TIMEOUT, Kind::Duration { min: Duration::ZERO, max: secs(3600) }, default: Some("30s"), aliases: [];
        /// Upper bound on Redis connections for requests per process, split between the workers like
        /// the Postgres pool; two more serve the probes. Each worker shares one multiplexed
        /// connection among its requests and takes another from its pool only to replace a broken one.
        redis_pool_size: usize = STORAGE_REDIS_POOL_SIZE, Kind::Int { min: 1, max: 1000 }, default: Some("16"), aliases: [];
        /// Bound on each Redis command.
        redis_timeout: Duration = STORAGE_REDIS_TIMEOUT, Kind::Duration { min: ms(1), max: secs(300) }, default: Some("1s"), aliases: [];
        /// Prefix of every Redis key, so several deployments can share one Redis.
        redis_key_prefix: String = STORAGE_REDIS_KEY_PREFIX, Kind::Text, default: Some("agent:"), aliases: [];
        /// Sessions idle (no turn stored) for longer than this are deleted, with their messages, by
        /// a background sweep: in batches, one replica at a time (a Postgres advisory lock), never a
        /// session with a turn in progress (it takes the session's lock). Usage counts are kept.
        /// 0: sessions are kept forever.
        session_retention: Duration = STORAGE_SESSION_RETENTION, Kind::Duration { min: Duration::ZERO, max: secs(100 * 365 * 24 * 3600) }, default: Some("0s"), aliases: [];
        /// How often the retention sweep runs (each run deletes until no idle session is left or
        /// a bounded number of batches is done).
        retention_sweep_interval: Duration = STORAGE_RETENTION_SWEEP_INTERVAL, Kind::Duration { min: ms(100), max: secs(24 * 3600) }, default: Some("1m"), aliases: [];
    }
    /// The readiness checks.
    HealthSettings ("health.") {
        /// Upper bound for each readiness check.
        check_timeout: Duration = HEALTH_CHECK_TIMEOUT, Kind::Duration { min: ms(1), max: secs(60) }, default: Some("2s"), aliases: [];
        /// Readiness results are reused for this long so probe storms do not hammer dependencies.
        cache_ttl: Duration = HEALTH_CACHE_TTL, Kind::Duration { min: Duration::ZERO, max: secs(60) }, default: Some("1s"), aliases: [];
    }
}

/// The configuration reference: one Markdown table row per key, generated from the
/// declarations (`docs/configuration.md` holds it between markers; a test keeps it in step).
pub fn reference_table() -> String {
    let mut table = String::from(
        "| Variable | TOML key | Values | Default | What it does |\n| --- | --- | --- | --- | --- |\n",
    );
    for key in KEYS {
        let mut names = vec![format!("`{}`", key.prefixed_env_name())];
        names.extend(key.aliases.iter().map(|alias| format!("`{alias}`")));
        if key.is_secret() {
            names.push("(`_FILE` too)".to_owned());
        }
        let default = match key.default {
            Some("") | None => "(unset)".to_owned(),
            Some(default) => format!("`{default}`"),
        };
        table.push_str(&format!(
            "| {} | `{}` | {} | {} | {} |\n",
            names.join(" "),
            key.path,
            key.kind.describe(),
            default,
            key.table_cell()
        ));
    }
    table
}

/// Variables of the deployment tooling (Compose, `cargo xtask`), not of the service; they may
/// share the prefix without being reported as unknown.
pub(crate) const DEPLOYMENT_VARIABLES: &[&str] = &[
    "POSTGRES_PASSWORD",
    "AGENT_IMAGE",
    "POSTGRES_IMAGE",
    "REDIS_IMAGE",
    "NGINX_IMAGE",
    "MCP_SERVER_IMAGE",
    "RUST_IMAGE",
    "RUNTIME_IMAGE",
    "AGENT_BIND_ADDRESS",
    "AGENT_PORT",
    "NGINX_PORT",
];

/// The variable naming the optional TOML file.
pub(crate) const CONFIG_FILE_VARIABLE: &str = "AGENT_CONFIG";

pub(crate) fn find(path: &str) -> Option<&'static Key> {
    KEYS.iter().find(|key| key.path == path)
}
