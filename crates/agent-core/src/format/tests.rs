//! The simplest answer of a schema validates against it; formats are checked when made.

use serde_json::{Value, json};

use super::{FormatError, JsonSchemaFormat, ResponseFormat};

/// The wire form as JSON.
fn wire(format: &ResponseFormat) -> Option<Value> {
    format
        .to_wire()
        .map(|wire| serde_json::to_value(wire).unwrap())
}

/// The simplest answer of `schema` is JSON that the schema accepts.
fn check(schema: Value) {
    let format = ResponseFormat::JsonSchema(
        JsonSchemaFormat::new("answer".into(), None, Some(schema.clone()), Some(true)).unwrap(),
    );
    let answer: Value = serde_json::from_str(&format.simplest_answer("ignored")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&answer)
        .map(|error| error.to_string())
        .collect();
    assert!(errors.is_empty(), "{answer} against {schema}: {errors:?}");
}

#[test]
fn scalars_take_their_bounds() {
    check(json!({"type": "string"}));
    check(json!({"type": "string", "minLength": 3, "maxLength": 5}));
    check(json!({"type": "integer", "minimum": 7}));
    check(json!({"type": "number", "exclusiveMinimum": 0.5}));
    check(json!({"type": "integer", "maximum": -3}));
    check(json!({"type": "boolean"}));
    check(json!({"type": "null"}));
    check(json!({"enum": ["red", "green"]}));
    check(json!({"const": 42}));
}

#[test]
fn objects_hold_their_required_properties_only() {
    check(json!({
        "type": "object",
        "properties": {
            "city": {"type": "string", "minLength": 1},
            "population": {"type": "integer", "minimum": 1},
            "optional": {"type": "string", "minLength": 4}
        },
        "required": ["city", "population"],
        "additionalProperties": false
    }));
    check(json!({"type": "array", "items": {"type": "string"}, "minItems": 2}));
    check(json!({"type": ["string", "null"]}));
}

/// What pydantic writes for `class Answer(BaseModel)` with a nested model, an optional field,
/// a literal and a list (strict structured output: every property required).
#[test]
fn a_pydantic_schema_with_definitions_and_references() {
    check(json!({
        "$defs": {
            "Step": {
                "properties": {"explanation": {"title": "Explanation", "type": "string"},
                               "output": {"title": "Output", "type": "string"}},
                "required": ["explanation", "output"],
                "title": "Step", "type": "object", "additionalProperties": false
            }
        },
        "properties": {
            "steps": {"items": {"$ref": "#/$defs/Step"}, "title": "Steps", "type": "array", "minItems": 1},
            "final_answer": {"title": "Final Answer", "type": "string"},
            "confidence": {"anyOf": [{"type": "number"}, {"type": "null"}]},
            "mood": {"enum": ["happy", "sad"], "type": "string"}
        },
        "required": ["steps", "final_answer", "confidence", "mood"],
        "title": "Answer", "type": "object", "additionalProperties": false
    }));
}

#[test]
fn recursive_and_combined_schemas_end() {
    check(json!({
        "$defs": {"Node": {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}}, "required": ["children"]}},
        "$ref": "#/$defs/Node"
    }));
    check(json!({"allOf": [
        {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
        {"type": "object", "properties": {"b": {"type": "integer"}}, "required": ["b"]}
    ]}));
    check(json!({"oneOf": [{"type": "integer", "minimum": 1}, {"type": "string"}]}));
}

#[test]
fn text_and_json_object_answers() {
    assert_eq!(ResponseFormat::Text.simplest_answer("hi"), "hi");
    let object: Value =
        serde_json::from_str(&ResponseFormat::JsonObject.simplest_answer("hi")).unwrap();
    assert_eq!(object, json!({"answer": "hi"}));
    assert_eq!(ResponseFormat::Text.to_wire(), None);
    assert_eq!(
        wire(&ResponseFormat::JsonObject),
        Some(json!({"type": "json_object"}))
    );
}

#[test]
fn a_format_is_checked_when_made() {
    let make = |name: &str, schema: Value| {
        JsonSchemaFormat::new(name.into(), None, Some(schema), None).map(|_| ())
    };
    assert_eq!(make("", json!({})), Err(FormatError::Name));
    assert_eq!(make("has space", json!({})), Err(FormatError::Name));
    assert_eq!(make(&"a".repeat(65), json!({})), Err(FormatError::Name));
    assert_eq!(make("ok", json!([1])), Err(FormatError::NotAnObject));
    assert!(matches!(
        make("ok", json!({"type": "no-such-type"})),
        Err(FormatError::InvalidSchema(_))
    ));
    assert_eq!(make("Answer_1-x", json!({"type": "object"})), Ok(()));
    let schema_format = ResponseFormat::JsonSchema(
        JsonSchemaFormat::new(
            "a".into(),
            Some("d".into()),
            Some(json!({"type": "object"})),
            Some(true),
        )
        .unwrap(),
    );
    assert_eq!(
        wire(&schema_format),
        Some(json!({"type": "json_schema", "json_schema": {
            "name": "a", "description": "d", "schema": {"type": "object"}, "strict": true
        }}))
    );
}
