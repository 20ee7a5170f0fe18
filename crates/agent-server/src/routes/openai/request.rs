//! What the two OpenAI turn routes check alike: parameters within their bounds, the refusals of
//! what the agent cannot honour, message text and roles, and the errors they document.

use actix_web::http::StatusCode;
use agent_config::Settings;
use agent_core::{Message, Sampling};
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::OpenAiErrorBody;
use crate::dto::message_problem;
use crate::error::{ApiError, ErrorCode};

/// 400 `invalid_request` naming `param`.
pub(super) fn bad(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid_param(
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidRequest,
        param,
        message,
    )
}

/// OpenAI answers an invalid field with 400; ours say 422 elsewhere.
pub(super) fn as_bad_request(error: ApiError) -> ApiError {
    match error {
        ApiError::Invalid {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code,
            message,
            param,
        } => ApiError::Invalid {
            status: StatusCode::BAD_REQUEST,
            code,
            message,
            param,
        },
        other => other,
    }
}

/// 400 naming the parameter of the first refusal that applies: (refused, parameter, why).
pub(super) fn first_refusal<const N: usize>(
    refusals: [(bool, &str, &str); N],
) -> Result<(), ApiError> {
    match refusals.into_iter().find(|(refused, _, _)| *refused) {
        Some((_, param, message)) => Err(bad(param, message)),
        None => Ok(()),
    }
}

/// Declares an OpenAI turn request: its own fields, then the fields both APIs take alike
/// (`temperature`, `top_p`), read by `shared()`.
macro_rules! turn_request {
    ($(#[$meta:meta])* $vis:vis struct $name:ident { $($fields:tt)* }) => {
        $(#[$meta])*
        $vis struct $name {
            $($fields)*
            #[serde(default)]
            #[schema(nullable, minimum = 0, maximum = 2)]
            temperature: Option<f64>,
            #[serde(default)]
            #[schema(nullable, minimum = 0, maximum = 1)]
            top_p: Option<f64>,
        }

        impl $name {
            fn shared(&self) -> $crate::routes::openai::request::Shared {
                $crate::routes::openai::request::Shared {
                    temperature: self.temperature,
                    top_p: self.top_p,
                }
            }
        }
    };
}
pub(super) use turn_request;

/// The fields every OpenAI turn request has (see [`turn_request`]).
pub(crate) struct Shared {
    pub(crate) temperature: Option<f64>,
    pub(crate) top_p: Option<f64>,
}

impl Shared {
    /// `temperature` and `top_p` within their bounds, with `max_tokens` (400 naming the first
    /// out of bounds).
    pub(super) fn sampling(
        &self,
        max_tokens: (&str, Option<u32>),
        settings: &Settings,
    ) -> Result<Sampling, ApiError> {
        Ok(Sampling {
            temperature: within("temperature", self.temperature, 0.0, 2.0)?,
            top_p: within("top_p", self.top_p, 0.0, 1.0)?,
            max_tokens: within_max_tokens(max_tokens.0, max_tokens.1, settings)?,
            ..Sampling::default()
        })
    }
}

/// Whether a `tool_choice` asks for nothing the client would have to offer: unset, `auto` or
/// `none`.
pub(super) fn choice_is_free(choice: Option<&Value>) -> bool {
    choice.is_none_or(|choice| choice == "auto" || choice == "none")
}

/// `value` if it is within `low..=high`, else 400 naming `param`.
/// Read as sent (a 64-bit number) and checked so, then narrowed: `2.0000000000000004` is above 2
/// even though it is 2 as an `f32`.
pub(super) fn within(
    param: &str,
    value: Option<f64>,
    low: f64,
    high: f64,
) -> Result<Option<f32>, ApiError> {
    match value {
        Some(value) if !(low..=high).contains(&value) => Err(bad(
            param,
            format!("{param} must be between {low} and {high}"),
        )),
        #[expect(
            clippy::cast_possible_truncation,
            reason = "within the bounds checked above, a few units of the last place at most"
        )]
        _ => Ok(value.map(|value| value as f32)),
    }
}

/// A token bound of a request, within 1 and the configured `model.max_tokens`.
pub(super) fn within_max_tokens(
    param: &str,
    tokens: Option<u32>,
    settings: &Settings,
) -> Result<Option<u32>, ApiError> {
    let configured = settings.model.max_tokens;
    match tokens {
        Some(tokens) if !(1..=configured).contains(&tokens) => Err(bad(
            param,
            format!("{param} must be between 1 and {configured} (AGENT_MODEL__MAX_TOKENS)"),
        )),
        _ => Ok(tokens),
    }
}

/// A message's content as sent: text, or the texts of its parts.
pub(super) enum Content<'a> {
    Text(&'a str),
    Parts(Vec<&'a str>),
}

impl Content<'_> {
    /// The text (parts joined with newlines), or 400 naming `param` (the content) if it or any
    /// part of it is blank, holds a NUL character, or is longer than `max_chars`: one rule for
    /// every message of both APIs.
    pub(super) fn text(self, param: &str, max_chars: usize) -> Result<String, ApiError> {
        let check = |text: &str, param: &str| match message_problem(text, max_chars) {
            Some(problem) => Err(bad(param, format!("{param} {problem}"))),
            None => Ok(()),
        };
        match self {
            Self::Text(text) => check(text, param).map(|()| text.to_owned()),
            Self::Parts(parts) if parts.is_empty() => {
                Err(bad(param, format!("{param} must hold at least one part")))
            }
            Self::Parts(parts) => {
                for (index, part) in parts.iter().enumerate() {
                    check(part, &format!("{param}[{index}].text"))?;
                }
                let joined = parts.join("\n");
                check(&joined, param).map(|()| joined)
            }
        }
    }
}

/// A message's role in both APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ChatRole {
    // The user first: the only role a conversation may end with (schema-driven fuzzers take the
    // first value of an enum as its typical one).
    User,
    Assistant,
    System,
    Developer,
}

impl ChatRole {
    pub(super) fn is_system(self) -> bool {
        matches!(self, Self::System | Self::Developer)
    }

    /// 400 naming `param` (the role) for a system or developer message the server refuses
    /// (`AGENT_OPENAI_API__SYSTEM_MESSAGES=refuse`).
    pub(super) fn check(self, param: &str, settings: &Settings) -> Result<Self, ApiError> {
        if self.is_system() && !settings.openai_api.follow_system_messages {
            return Err(bad(
                param,
                "system and developer messages are refused by this server \
                 (AGENT_OPENAI_API__SYSTEM_MESSAGES=refuse); its own system prompt applies",
            ));
        }
        Ok(self)
    }

    /// `text` as a message of this role (system and developer messages are system messages).
    pub(super) fn message(self, text: impl Into<String>) -> Message {
        match self {
            Self::User => Message::user(text),
            Self::Assistant => Message::assistant(text),
            Self::System | Self::Developer => Message::system(text),
        }
    }
}

/// The refusals both turn routes document alike (404 and 409 differ per route).
#[derive(utoipa::IntoResponses)]
#[expect(dead_code, reason = "documents the answers; the errors are ApiErrors")]
pub(super) enum TurnRefusals {
    #[response(
        status = 400,
        description = "Malformed JSON, an invalid or unsupported parameter (`param` names it), or a conversation longer than the model's context window (`context_length_exceeded`)"
    )]
    BadRequest(OpenAiErrorBody),
    #[response(status = 413, description = "Body too large (`payload_too_large`)")]
    PayloadTooLarge(OpenAiErrorBody),
    #[response(
        status = 415,
        description = "Not sent as JSON (`unsupported_media_type`)"
    )]
    UnsupportedMediaType(OpenAiErrorBody),
    #[response(
        status = 422,
        description = "A turn limit reached, or a reused Idempotency-Key"
    )]
    Unprocessable(OpenAiErrorBody),
    #[response(
        status = 500,
        description = "A failure of the server's own (`internal_error`)"
    )]
    Internal(OpenAiErrorBody),
    #[response(status = 502, description = "The model server failed")]
    BadGateway(OpenAiErrorBody),
    #[response(
        status = 503,
        description = "Storage unavailable, or the model server's rate limit; see Retry-After"
    )]
    Unavailable(OpenAiErrorBody),
    #[response(status = 504, description = "The model or the turn timed out")]
    Timeout(OpenAiErrorBody),
}
