//! The form a turn's text answer must take (OpenAI's `response_format`): free text, any JSON
//! object, or JSON matching a schema. Checked once when a client asks for it, sent with every
//! model call of the turn (tool calls stay free-form: their arguments follow the tools' own
//! schemas), and, for the offline model, the simplest JSON value a schema accepts.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The form of the text answer. Its serde form (`{"type": "json_schema", "name": …}`) is how a
/// queued run keeps it, not a wire format (each API writes its own).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Free text (the default: nothing is sent to the model).
    #[default]
    Text,
    /// A JSON object, any.
    JsonObject,
    /// JSON matching a schema.
    JsonSchema(JsonSchemaFormat),
}

/// A named JSON Schema for the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonSchemaFormat {
    /// 1 to 64 of `[A-Za-z0-9_-]`.
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON Schema (an object); the model server's default when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    /// Ask the model server to follow the schema exactly (OpenAI's structured outputs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// `response_format` as Chat Completions take it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WireFormat<'a> {
    JsonObject,
    JsonSchema { json_schema: &'a JsonSchemaFormat },
}

/// Why a requested format cannot be used; the message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("the name must be 1 to 64 of [A-Za-z0-9_-]")]
    Name,
    #[error("the schema must be a JSON object")]
    NotAnObject,
    #[error("the schema is not a valid JSON Schema: {0}")]
    InvalidSchema(String),
}

impl JsonSchemaFormat {
    /// A format whose name and schema are checked: the schema must compile as a JSON Schema
    /// (no remote references are fetched).
    pub fn new(
        name: String,
        description: Option<String>,
        schema: Option<Value>,
        strict: Option<bool>,
    ) -> Result<Self, FormatError> {
        if !crate::model::is_function_name(&name) {
            return Err(FormatError::Name);
        }
        if let Some(schema) = &schema {
            if !schema.is_object() {
                return Err(FormatError::NotAnObject);
            }
            jsonschema::validator_for(schema)
                .map_err(|error| FormatError::InvalidSchema(error.to_string()))?;
        }
        Ok(Self {
            name,
            description,
            schema,
            strict,
        })
    }
}

impl ResponseFormat {
    /// Whether the answer is free text.
    pub fn is_text(&self) -> bool {
        matches!(self, Self::Text)
    }

    /// OpenAI's `response_format` of a chat completion request, borrowing the schema (it is
    /// serialised with every model call of the turn, never copied); None for free text.
    pub fn to_wire(&self) -> Option<WireFormat<'_>> {
        match self {
            Self::Text => None,
            Self::JsonObject => Some(WireFormat::JsonObject),
            Self::JsonSchema(json_schema) => Some(WireFormat::JsonSchema { json_schema }),
        }
    }

    /// The simplest JSON text of this format wrapping `text`: for a schema, the simplest value
    /// it accepts (what the offline model answers).
    pub fn simplest_answer(&self, text: &str) -> String {
        match self {
            Self::Text => text.to_owned(),
            Self::JsonObject => json!({ "answer": text }).to_string(),
            Self::JsonSchema(format) => {
                let schema = format.schema.clone().unwrap_or_else(|| json!({}));
                simplest_value(&schema, &schema, 0).to_string()
            }
        }
    }
}

/// How deep `$ref`s and nesting are followed before a value is cut short (a recursive schema
/// has no finite simplest value otherwise).
const MAX_DEPTH: usize = 32;

/// The simplest value `schema` accepts (`root` resolves local `$ref`s): required properties
/// only, the least items, the first of an enum or a union, the bounds of numbers and lengths.
/// A best effort for schemas of the kinds structured output uses; never fails.
fn simplest_value(schema: &Value, root: &Value, depth: usize) -> Value {
    let Some(object) = schema.as_object() else {
        // `true`, `false` or nonsense: anything will do.
        return Value::Null;
    };
    if depth > MAX_DEPTH {
        return Value::Null;
    }
    if let Some(constant) = object.get("const") {
        return constant.clone();
    }
    if let Some(first) = object
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|values| values.first())
    {
        return first.clone();
    }
    if let Some(reference) = object.get("$ref").and_then(Value::as_str) {
        return match resolve(root, reference) {
            Some(target) => simplest_value(target, root, depth + 1),
            None => Value::Null,
        };
    }
    for union in ["anyOf", "oneOf"] {
        if let Some(first) = object
            .get(union)
            .and_then(Value::as_array)
            .and_then(|options| options.first())
        {
            return simplest_value(first, root, depth + 1);
        }
    }
    if let Some(parts) = object.get("allOf").and_then(Value::as_array) {
        // Objects from every part merged; otherwise the first part's value.
        let values: Vec<Value> = parts
            .iter()
            .map(|part| simplest_value(part, root, depth + 1))
            .collect();
        if values.iter().all(Value::is_object) {
            let mut merged = Map::new();
            for value in values {
                if let Value::Object(fields) = value {
                    merged.extend(fields);
                }
            }
            return Value::Object(merged);
        }
        return values.into_iter().next().unwrap_or(Value::Null);
    }
    let kind = match object.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        // A list of types: the first that is not null, as clients mean "this, or null".
        Some(Value::Array(kinds)) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|kind| *kind != "null")
            .or_else(|| kinds.first().and_then(Value::as_str))
            .unwrap_or("null"),
        _ if object.contains_key("properties") => "object",
        _ if object.contains_key("items") => "array",
        _ => "null",
    };
    let unsigned = |key: &str| object.get(key).and_then(Value::as_u64).unwrap_or(0);
    match kind {
        "object" => {
            let properties = object.get("properties").and_then(Value::as_object);
            let required = object.get("required").and_then(Value::as_array);
            let mut fields = Map::new();
            for name in required.into_iter().flatten().filter_map(Value::as_str) {
                let property = properties.and_then(|properties| properties.get(name));
                let value = property.map_or(Value::Null, |property| {
                    simplest_value(property, root, depth + 1)
                });
                fields.insert(name.to_owned(), value);
            }
            Value::Object(fields)
        }
        "array" => {
            let items = object.get("items").cloned().unwrap_or(Value::Bool(true));
            let count = unsigned("minItems").min(16);
            let prefix = object.get("prefixItems").and_then(Value::as_array);
            (0..count as usize)
                .map(|index| match prefix.and_then(|prefix| prefix.get(index)) {
                    Some(item) => simplest_value(item, root, depth + 1),
                    None => simplest_value(&items, root, depth + 1),
                })
                .collect()
        }
        "string" => Value::String("x".repeat(unsigned("minLength").min(1024) as usize)),
        "integer" | "number" => {
            let minimum = object.get("minimum").and_then(Value::as_f64);
            let exclusive = object.get("exclusiveMinimum").and_then(Value::as_f64);
            let maximum = object.get("maximum").and_then(Value::as_f64);
            let low = match (minimum, exclusive) {
                (_, Some(exclusive)) => exclusive.floor() + 1.0,
                (Some(minimum), None) => minimum.ceil(),
                (None, None) => 0.0_f64.min(maximum.unwrap_or(0.0).floor()),
            };
            json!(low as i64)
        }
        "boolean" => Value::Bool(false),
        _ => Value::Null,
    }
}

/// The schema at a local reference (`#`, `#/$defs/Name`, `#/definitions/Name`, …).
fn resolve<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    root.pointer(pointer)
}

#[cfg(test)]
mod tests;
