//! `response_format`, the form of a turn's final answer, in the two shapes clients send it:
//! Chat Completions' (also `POST /agent`'s) `{"type": "json_schema", "json_schema": {...}}`, and
//! the Responses API's `text.format`, `{"type": "json_schema", "name": ..., "schema": ...}`. Both
//! become agent-core's `ResponseFormat`, checked (name, schema) on the way.

use actix_web::http::StatusCode;
use agent_core::{JsonSchemaFormat, ResponseFormat};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorCode};

/// `response_format`: free text (the default), any JSON object, or JSON matching a schema. Sent
/// to the model with every call of the turn: it shapes the final answer; tool calls stay free.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ChatResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaParam },
}

/// `text.format` of the Responses API: as [`ChatResponseFormat`], the schema's fields beside
/// `type`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum TextFormat {
    Text,
    JsonObject,
    JsonSchema(JsonSchemaParam),
}

/// A named JSON Schema the answer must match.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub(crate) struct JsonSchemaParam {
    /// The schema's name.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable)]
    description: Option<String>,
    /// A JSON Schema (an object; local `$ref`s only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable, value_type = Option<Object>)]
    schema: Option<Value>,
    /// Ask the model to follow the schema exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable)]
    strict: Option<bool>,
}

impl JsonSchemaParam {
    /// Checked, or 422 naming `param` (this object's path in the request).
    fn checked(&self, param: &str) -> Result<ResponseFormat, ApiError> {
        JsonSchemaFormat::new(
            self.name.clone(),
            self.description.clone(),
            self.schema.clone(),
            self.strict,
        )
        .map(ResponseFormat::JsonSchema)
        .map_err(|error| {
            let field = match error {
                agent_core::FormatError::Name => "name",
                _ => "schema",
            };
            let param = format!("{param}.{field}");
            ApiError::invalid_param(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidRequest,
                param.clone(),
                format!("{param}: {error}"),
            )
        })
    }
}

impl ChatResponseFormat {
    /// The format, or 422 naming the field at fault under `param` (`response_format`).
    pub(crate) fn checked(&self, param: &str) -> Result<ResponseFormat, ApiError> {
        match self {
            Self::Text => Ok(ResponseFormat::Text),
            Self::JsonObject => Ok(ResponseFormat::JsonObject),
            Self::JsonSchema { json_schema } => {
                json_schema.checked(&format!("{param}.json_schema"))
            }
        }
    }
}

impl TextFormat {
    /// The format, or 422 naming the field at fault under `param` (`text.format`).
    pub(crate) fn checked(&self, param: &str) -> Result<ResponseFormat, ApiError> {
        match self {
            Self::Text => Ok(ResponseFormat::Text),
            Self::JsonObject => Ok(ResponseFormat::JsonObject),
            Self::JsonSchema(json_schema) => json_schema.checked(param),
        }
    }
}
