//! Tools the model may call: the `Tool` trait, a registry that validates arguments against each
//! tool's JSON Schema, and turns every failure into a message the model sees instead of a crash.

mod builtin;
mod http;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

pub use builtin::{Calculator, CurrentTime};
pub use http::{HttpTool, HttpToolMethod, HttpToolOptions};

use crate::conversation::ToolCall;
use crate::error::ToolError;
use crate::model::ToolSpec;

/// A tool: a name, a description and an argument schema for the model, and an async call.
#[async_trait]
pub trait Tool: Send + Sync + Debug {
    fn name(&self) -> &str;
    fn description(&self) -> &str;
    /// JSON Schema of the arguments object.
    fn parameters(&self) -> Value;
    /// Runs with arguments already validated against [`Tool::parameters`].
    async fn call(&self, arguments: Value) -> Result<String, ToolError>;
}

/// What a tool call produced: the text for the tool message, and whether it is an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutcome {
    pub content: String,
    pub is_error: bool,
}

struct Registered {
    tool: Arc<dyn Tool>,
    validator: jsonschema::Validator,
}

impl Debug for Registered {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Registered")
            .field("tool", &self.tool.name())
            .finish()
    }
}

/// The tools of an agent.
#[derive(Debug)]
pub struct ToolRegistry {
    tools: Vec<Registered>,
    timeout: Duration,
}

impl ToolRegistry {
    /// An empty registry; each call is bounded by `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self {
            tools: Vec::new(),
            timeout,
        }
    }

    /// The built-in tools: the current time and a calculator.
    pub fn with_builtins(timeout: Duration) -> Result<Self, ToolError> {
        let mut registry = Self::new(timeout);
        registry.register(Arc::new(CurrentTime))?;
        registry.register(Arc::new(Calculator))?;
        Ok(registry)
    }

    /// Adds a tool; its name must be new and its schema valid.
    pub fn register(&mut self, tool: Arc<dyn Tool>) -> Result<(), ToolError> {
        let name = tool.name().to_owned();
        if self
            .tools
            .iter()
            .any(|registered| registered.tool.name() == name)
        {
            return Err(ToolError::Duplicate(name));
        }
        let validator = jsonschema::validator_for(&tool.parameters()).map_err(|error| {
            ToolError::InvalidSchema {
                name,
                problem: error.to_string(),
            }
        })?;
        self.tools.push(Registered { tool, validator });
        Ok(())
    }

    /// The tools as the model sees them.
    pub fn specs(&self) -> Vec<ToolSpec> {
        self.tools
            .iter()
            .map(|registered| ToolSpec {
                name: registered.tool.name().to_owned(),
                description: registered.tool.description().to_owned(),
                parameters: registered.tool.parameters(),
            })
            .collect()
    }

    /// Runs one call. Unknown tools, invalid JSON, schema violations, failures and timeouts
    /// all become an error outcome the model can read and correct.
    #[tracing::instrument(level = "debug", skip(self, call), fields(tool = %call.name, call_id = %call.id))]
    pub async fn call(&self, call: &ToolCall) -> ToolOutcome {
        let result = self.run(call).await;
        match result {
            Ok(content) => ToolOutcome {
                content,
                is_error: false,
            },
            Err(message) => {
                tracing::info!(%message, "tool call failed");
                ToolOutcome {
                    content: format!("error: {message}"),
                    is_error: true,
                }
            }
        }
    }

    async fn run(&self, call: &ToolCall) -> Result<String, String> {
        let registered = self
            .tools
            .iter()
            .find(|registered| registered.tool.name() == call.name)
            .ok_or_else(|| format!("there is no tool named {:?}", call.name))?;
        let text = if call.arguments.trim().is_empty() {
            "{}"
        } else {
            call.arguments.as_str()
        };
        let arguments: Value = serde_json::from_str(text)
            .map_err(|error| format!("the arguments are not valid JSON: {error}"))?;
        let problems: Vec<String> = registered
            .validator
            .iter_errors(&arguments)
            .map(|error| {
                let path = error.instance_path().to_string();
                if path.is_empty() {
                    error.to_string()
                } else {
                    format!("{path}: {error}")
                }
            })
            .collect();
        if !problems.is_empty() {
            return Err(format!("invalid arguments: {}", problems.join("; ")));
        }
        match tokio::time::timeout(self.timeout, registered.tool.call(arguments)).await {
            Ok(result) => result.map_err(|error| error.to_string()),
            Err(_) => Err(format!("the tool did not finish within {:?}", self.timeout)),
        }
    }
}
