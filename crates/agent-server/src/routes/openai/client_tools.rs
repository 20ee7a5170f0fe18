//! The client's own tools on the OpenAI-compatible API (`tools` of a chat completion request):
//! offered to the model beside the agent's; a call to one ends the run's step and goes back to
//! the client as `tool_calls` (the step's calls to the agent's tools run at once), and the
//! client's `tool` messages carry the results on. `parallel_tool_calls` is passed to the model
//! server (in the turn's sampling choices). Bounded: at most [`MAX_TOOLS`], names of 1 to
//! 64 `A-Z a-z 0-9 _ -`, each schema at most [`MAX_SCHEMA_BYTES`], no name of the agent's own
//! tools.

use agent_core::{Agent, ToolCall, ToolSpec};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::error::ApiError;

/// The most tools a request may offer.
pub(crate) const MAX_TOOLS: usize = 128;
/// The largest `parameters` schema of one tool (its JSON text).
pub(crate) const MAX_SCHEMA_BYTES: usize = 64 * 1024;

/// A tool the client offers (`tools[]`): a function it runs itself.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct ChatTool {
    #[serde(rename = "type")]
    #[expect(dead_code, reason = "its one value is checked by deserializing it")]
    kind: FunctionType,
    function: FunctionDefinition,
}

/// Only `function`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum FunctionType {
    Function,
}

/// A tool the client offers on the Responses API (`tools[]`): a function, flat.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct ResponseTool {
    #[serde(rename = "type")]
    #[expect(dead_code, reason = "its one value is checked by deserializing it")]
    kind: FunctionType,
    #[serde(flatten)]
    function: FunctionDefinition,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct FunctionDefinition {
    /// 1 to 64 of `A-Z a-z 0-9 _ -`; not the name of one of the agent's own tools.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable)]
    description: Option<String>,
    /// The JSON Schema of the arguments (an object schema, at most 64 KiB); none: no
    /// arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable, value_type = Option<Object>)]
    parameters: Option<Value>,
    /// Not used (the model server's own checks apply).
    #[serde(default, skip_serializing)]
    #[schema(nullable)]
    #[expect(
        dead_code,
        reason = "accepted from OpenAI clients and type-checked, not used"
    )]
    strict: Option<bool>,
}

/// A tool call of an assistant message the client sends back (its history).
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct MessageToolCall {
    id: String,
    #[serde(rename = "type")]
    #[expect(dead_code, reason = "its one value is checked by deserializing it")]
    kind: FunctionType,
    function: CalledFunction,
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct CalledFunction {
    name: String,
    /// The arguments as the model wrote them (JSON text).
    arguments: String,
}

impl MessageToolCall {
    pub(crate) fn call(&self) -> ToolCall {
        ToolCall {
            id: self.id.clone(),
            name: self.function.name.clone(),
            arguments: self.function.arguments.clone(),
        }
    }
}

/// A tool call of an answer (`message.tool_calls[]`, and a chunk's `delta.tool_calls[]` with
/// its `index`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct AnsweredToolCall {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) index: Option<u32>,
    pub(crate) id: String,
    #[serde(rename = "type")]
    pub(crate) kind: FunctionType,
    pub(crate) function: AnsweredFunction,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct AnsweredFunction {
    pub(crate) name: String,
    pub(crate) arguments: String,
}

impl AnsweredToolCall {
    pub(crate) fn of(call: &ToolCall, index: Option<u32>) -> Self {
        Self {
            index,
            id: call.id.clone(),
            kind: FunctionType::Function,
            function: AnsweredFunction {
                name: call.name.clone(),
                arguments: call.arguments.clone(),
            },
        }
    }
}

/// The functions of a chat completion request's `tools`, each with where it is.
pub(crate) fn of_chat(tools: Option<&[ChatTool]>) -> Vec<(String, &FunctionDefinition)> {
    tools
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(index, tool)| (format!("tools[{index}].function"), &tool.function))
        .collect()
}

/// The functions of a response request's `tools`, each with where it is.
pub(crate) fn of_responses(tools: Option<&[ResponseTool]>) -> Vec<(String, &FunctionDefinition)> {
    tools
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(index, tool)| (format!("tools[{index}]"), &tool.function))
        .collect()
}

/// The functions of an `/agent` request's `tools`, each with where it is.
pub(crate) fn of_agent(tools: Option<&[FunctionDefinition]>) -> Vec<(String, &FunctionDefinition)> {
    tools
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(index, tool)| (format!("tools[{index}]"), tool))
        .collect()
}

/// A refusal of `param` (422; the OpenAI-compatible routes answer it as a 400).
fn bad(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid_param(
        actix_web::http::StatusCode::UNPROCESSABLE_ENTITY,
        crate::error::ErrorCode::InvalidRequest,
        param,
        message,
    )
}

/// The tools `tools` offers (each function with where it is in the request), checked: none with
/// `tool_choice` `none`; 422 naming the first problem. A name given twice counts once (its
/// first definition).
pub(crate) fn checked(
    tools: Vec<(String, &FunctionDefinition)>,
    tool_choice: Option<&Value>,
    agent: &Agent,
) -> Result<Vec<ToolSpec>, ApiError> {
    let choice = tool_choice.map(|choice| choice.as_str().unwrap_or("a named tool"));
    match choice {
        None | Some("auto") => {}
        Some("none") => return Ok(Vec::new()),
        Some(other) => {
            return Err(bad(
                "tool_choice",
                format!(
                    "tool_choice '{other}' is not supported: only `auto` or `none` (the agent decides when to call tools)"
                ),
            ));
        }
    }
    if tools.is_empty() {
        return Ok(Vec::new());
    }
    if tools.len() > MAX_TOOLS {
        return Err(bad(
            "tools",
            format!("at most {MAX_TOOLS} tools may be offered"),
        ));
    }
    let agents = agent.tools().current();
    let mut specs: Vec<ToolSpec> = Vec::with_capacity(tools.len());
    for (at, function) in tools {
        let param = |field: &str| format!("{at}.{field}");
        let name = &function.name;
        if !agent_core::is_function_name(name) {
            return Err(bad(
                &param("name"),
                format!("tool name '{name}' is not 1 to 64 of [A-Za-z0-9_-]"),
            ));
        }
        if agents.specs().iter().any(|spec| spec.name == *name) {
            return Err(bad(
                &param("name"),
                format!(
                    "tool name '{name}' is the name of one of the agent's own tools: rename yours"
                ),
            ));
        }
        if specs.iter().any(|spec| spec.name == *name) {
            continue;
        }
        let parameters = match &function.parameters {
            None | Some(Value::Null) => serde_json::json!({"type": "object", "properties": {}}),
            Some(schema @ Value::Object(_)) => schema.clone(),
            Some(_) => {
                return Err(bad(
                    &param("parameters"),
                    "parameters must be a JSON Schema object",
                ));
            }
        };
        let size = serde_json::to_string(&parameters).map_or(usize::MAX, |text| text.len());
        if size > MAX_SCHEMA_BYTES {
            return Err(bad(
                &param("parameters"),
                format!(
                    "the parameters schema of '{name}' is {size} bytes: at most {MAX_SCHEMA_BYTES}"
                ),
            ));
        }
        specs.push(ToolSpec {
            name: name.clone(),
            description: function.description.clone().unwrap_or_default(),
            parameters,
        });
    }
    Ok(specs)
}
