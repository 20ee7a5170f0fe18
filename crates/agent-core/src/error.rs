//! Why a model call or a turn failed, classified so the API can answer precisely.

use std::time::Duration;

/// A failed model call.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The model server kept answering 429 past the retry budget.
    #[error("the model server is rate limiting us")]
    RateLimited { retry_after: Option<Duration> },
    /// The model server failed (5xx, refused connection, reset) past the retry budget; with how
    /// long its last answer asked us to wait (`Retry-After`, `retry-after-ms`), when it said.
    #[error("the model server failed")]
    Upstream {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
        retry_after: Option<Duration>,
    },
    /// The model server did not answer in time.
    #[error("the model server did not answer within {0:?}")]
    Timeout(Duration),
    /// The model server refused our credentials (401/403): a configuration problem.
    #[error("the model server refused our credentials")]
    Authentication(String),
    /// The model server answered something we cannot use: malformed JSON, a cut stream, no choice.
    #[error("the model server answered something unusable: {0}")]
    Unusable(String),
    /// The model server rejected the request (4xx other than 401/403/429).
    #[error("the model server rejected the request: {0}")]
    Rejected(String),
    /// The conversation is longer than the model's context window (a 400 whose body says so:
    /// OpenAI's `context_length_exceeded`, vLLM's and llama.cpp's "maximum context length").
    #[error("the conversation does not fit the model's context window: {0}")]
    ContextLength(String),
    /// The model server refused the requested answer format (a 400 whose body names
    /// `response_format` or `json_schema`: no structured output, or a schema it cannot take).
    #[error("the model server refused the response format: {0}")]
    FormatRefused(String),
}

impl ModelError {
    /// A failure of the model server that said nothing of when to retry.
    pub(crate) fn upstream(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Upstream {
            source: source.into(),
            retry_after: None,
        }
    }

    /// A 4xx refusal of the request: a context-length refusal if its body says so.
    pub(crate) fn rejected(status: u16, body: &str) -> Self {
        let lower = body.to_ascii_lowercase();
        let too_long = status == 400
            && [
                "context_length_exceeded",
                "maximum context length",
                "context window",
            ]
            .iter()
            .any(|needle| lower.contains(needle));
        let format_refused = status == 400
            && ["response_format", "json_schema"]
                .iter()
                .any(|needle| lower.contains(needle));
        if too_long {
            Self::ContextLength(body.to_owned())
        } else if format_refused {
            Self::FormatRefused(body.to_owned())
        } else {
            Self::Rejected(format!("{status}: {body}"))
        }
    }
}

impl ModelError {
    /// A short name of the failure, for the `error.type` of spans.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::RateLimited { .. } => "rate_limited",
            Self::Upstream { .. } => "upstream",
            Self::Timeout(_) => "timeout",
            Self::Authentication(_) => "authentication",
            Self::Unusable(_) => "unusable",
            Self::Rejected(_) => "rejected",
            Self::ContextLength(_) => "context_length",
            Self::FormatRefused(_) => "format_refused",
        }
    }

    /// How long the model server asked us to wait (`Retry-After` or `retry-after-ms` on its
    /// last answer), when it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } | Self::Upstream { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Why a turn ended without an answer. The turn stores nothing.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The model kept calling tools for the whole step budget.
    #[error("the agent did not finish within {0} steps")]
    StepLimit(usize),
    /// This turn used more tokens than one turn may.
    #[error("the turn used {used} tokens, over its budget of {budget}")]
    TurnBudgetExceeded { used: u64, budget: u64 },
    /// The session has used its token budget.
    #[error("the session used {used} tokens, over its budget of {budget}")]
    SessionBudgetExceeded { used: u64, budget: u64 },
    /// The whole turn took longer than its deadline.
    #[error("the turn did not finish within {0:?}")]
    DeadlineExceeded(Duration),
    /// A request to the model would hold more tokens than the context policy allows, even with
    /// all the history it may leave out left out (or a policy that leaves nothing out).
    #[error("a request would hold {tokens} tokens, over the context budget of {budget}")]
    ContextLengthExceeded { tokens: u64, budget: u64 },
}

impl AgentError {
    /// A short name of the failure, for the `error.type` of spans: the model's failures are
    /// `model_` and theirs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Model(error) => match error {
                ModelError::RateLimited { .. } => "model_rate_limited",
                ModelError::Upstream { .. } => "model_upstream",
                ModelError::Timeout(_) => "model_timeout",
                ModelError::Authentication(_) => "model_authentication",
                ModelError::Unusable(_) => "model_unusable",
                ModelError::Rejected(_) => "model_rejected",
                ModelError::ContextLength(_) => "model_context_length",
                ModelError::FormatRefused(_) => "model_format_refused",
            },
            Self::StepLimit(_) => "step_limit",
            Self::TurnBudgetExceeded { .. } => "turn_budget",
            Self::SessionBudgetExceeded { .. } => "session_budget",
            Self::DeadlineExceeded(_) => "deadline",
            Self::ContextLengthExceeded { .. } => "context_length",
        }
    }
}

/// Why a tool could not be registered or did not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    #[error("a tool named {0} is already registered")]
    Duplicate(String),
    #[error("tool {name} has an invalid argument schema: {problem}")]
    InvalidSchema { name: String, problem: String },
    /// Two tools would have the same name (an MCP tool and another source's, at startup).
    #[error("two tools are named {name}: one of {first}, one of {second}")]
    Collision {
        name: String,
        first: String,
        second: String,
    },
    /// An agent's tool pattern is no valid glob.
    #[error("the tool pattern {pattern:?} is invalid: {problem}")]
    InvalidFilter { pattern: String, problem: String },
    /// The tool ran and failed; the message is shown to the model.
    #[error("{0}")]
    Failed(String),
    /// A tool source (an MCP server) cannot serve its tools now: its readiness check's failure.
    #[error("{0}")]
    Unavailable(String),
}

/// An error and its sources on one line (`outer: cause: root cause`), for logs and reports. The
/// one implementation in the workspace: storage and the server use it too.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
