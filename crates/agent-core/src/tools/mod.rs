//! Tools the model may call: the `Tool` trait, a registry that validates arguments against each
//! tool's JSON Schema, and turns every failure into a message the model sees instead of a crash.
//! The registry holds the fixed tools (built-in and HTTP) and, when attached, the MCP servers'
//! tools, whose list changes while the process runs: each turn takes a [`ToolSet`] at its start.
//! An agent's registry may keep only some tools ([`ToolFilter`]): the others are neither in its
//! sets nor callable through them.

mod builtin;
mod filter;
mod http;
pub(crate) mod mcp;

use std::fmt::Debug;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

pub use builtin::{Calculator, CurrentTime};
pub use filter::ToolFilter;
pub use http::{HttpTool, HttpToolMethod, HttpToolOptions, read_at_most};

use crate::conversation::ToolCall;
use crate::error::ToolError;
use crate::model::ToolSpec;
use mcp::McpTools;

/// A tool: a name, a description and an argument schema for the model, and an async call.
#[async_trait]
pub trait Tool: Send + Sync + Debug {
    fn name(&self) -> &str;
    fn description(&self) -> &str;
    /// JSON Schema of the arguments object.
    fn parameters(&self) -> Value;
    /// Where the tool comes from (shown by `GET /tools`).
    fn source(&self) -> ToolSource {
        ToolSource::Builtin
    }
    /// Runs with arguments already validated against [`Tool::parameters`].
    async fn call(&self, arguments: Value) -> Result<String, ToolError>;
}

/// Where a tool comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolSource {
    Builtin,
    /// An operator-declared HTTP tool.
    Http,
    /// A tool listed by the MCP server of this name.
    Mcp {
        server: String,
    },
}

/// What a tool call produced: the text for the tool message, and whether it is an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutcome {
    pub content: String,
    pub is_error: bool,
}

/// A tool with its compiled argument schema and its time bound.
pub(crate) struct Registered {
    tool: Arc<dyn Tool>,
    validator: jsonschema::Validator,
    spec: ToolSpec,
    /// `None`: the tool bounds its own calls (MCP tools, by their server's `timeout`).
    timeout: Option<Duration>,
}

impl Registered {
    /// Compiles the tool's schema; an invalid one is refused.
    pub(crate) fn new(tool: Arc<dyn Tool>, timeout: Option<Duration>) -> Result<Self, ToolError> {
        let parameters = tool.parameters();
        let validator =
            jsonschema::validator_for(&parameters).map_err(|error| ToolError::InvalidSchema {
                name: tool.name().to_owned(),
                problem: error.to_string(),
            })?;
        let spec = ToolSpec {
            name: tool.name().to_owned(),
            description: tool.description().to_owned(),
            parameters,
        };
        Ok(Self {
            tool,
            validator,
            spec,
            timeout,
        })
    }
}

impl Debug for Registered {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Registered")
            .field("tool", &self.tool.name())
            .finish()
    }
}

/// The tools of one moment: what a turn offers the model and calls, from its start to its end.
#[derive(Debug)]
pub struct ToolSet {
    /// The MCP catalog's generation this set was built from (0 without MCP servers).
    generation: u64,
    tools: Vec<Arc<Registered>>,
    specs: Arc<[ToolSpec]>,
}

impl ToolSet {
    fn new(generation: u64, tools: Vec<Arc<Registered>>) -> Self {
        let specs = tools.iter().map(|tool| tool.spec.clone()).collect();
        Self {
            generation,
            tools,
            specs,
        }
    }

    /// The tools as the model sees them.
    pub fn specs(&self) -> &[ToolSpec] {
        &self.specs
    }

    /// Where the tool of this name comes from, if the set has it.
    pub fn source_of(&self, name: &str) -> Option<ToolSource> {
        self.tools
            .iter()
            .find(|registered| registered.spec.name == name)
            .map(|registered| registered.tool.source())
    }

    /// Runs one call. Unknown tools, invalid JSON, schema violations, failures and timeouts
    /// all become an error outcome the model can read and correct. The agent wraps it in its
    /// `execute_tool` span.
    pub async fn call(&self, call: &ToolCall) -> ToolOutcome {
        match self.run(call).await {
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
            .find(|registered| registered.spec.name == call.name)
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
        let call = registered.tool.call(arguments);
        let result = match registered.timeout {
            None => call.await,
            Some(timeout) => tokio::time::timeout(timeout, call)
                .await
                .map_err(|_| format!("the tool did not finish within {timeout:?}"))?,
        };
        result.map_err(|error| error.to_string())
    }
}

/// The tools of an agent: the fixed ones, and the MCP servers' when attached.
#[derive(Debug)]
pub struct ToolRegistry {
    fixed: Vec<Arc<Registered>>,
    timeout: Duration,
    mcp: Option<Arc<McpTools>>,
    /// Only these tools (none: every tool).
    filter: Option<ToolFilter>,
    /// The last set built; rebuilt when the MCP catalog's generation moves.
    current: RwLock<Arc<ToolSet>>,
}

impl ToolRegistry {
    /// An empty registry; each call of a fixed tool is bounded by `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self {
            fixed: Vec::new(),
            timeout,
            mcp: None,
            filter: None,
            current: RwLock::new(Arc::new(ToolSet::new(0, Vec::new()))),
        }
    }

    /// The same tools (sharing their clients and the MCP connections) limited to `filter`.
    pub fn only(&self, filter: ToolFilter) -> Self {
        let fixed: Vec<Arc<Registered>> = self
            .fixed
            .iter()
            .filter(|registered| filter.allows(&registered.spec.name))
            .cloned()
            .collect();
        Self {
            current: RwLock::new(Arc::new(ToolSet::new(0, fixed.clone()))),
            fixed,
            timeout: self.timeout,
            mcp: self.mcp.clone(),
            filter: Some(filter),
        }
    }

    /// The tools it keeps, when it keeps only some.
    pub fn filter(&self) -> Option<&ToolFilter> {
        self.filter.as_ref()
    }

    /// The built-in tools: the current time and a calculator.
    pub fn with_builtins(timeout: Duration) -> Result<Self, ToolError> {
        let mut registry = Self::new(timeout);
        registry.register(Arc::new(CurrentTime))?;
        registry.register(Arc::new(Calculator))?;
        Ok(registry)
    }

    /// Adds a tool; its name must be new and its schema valid (kept only if the filter allows
    /// it).
    pub fn register(&mut self, tool: Arc<dyn Tool>) -> Result<(), ToolError> {
        if self.names().any(|name| name == tool.name()) {
            return Err(ToolError::Duplicate(tool.name().to_owned()));
        }
        if self
            .filter
            .as_ref()
            .is_some_and(|filter| !filter.allows(tool.name()))
        {
            return Ok(());
        }
        self.fixed
            .push(Arc::new(Registered::new(tool, Some(self.timeout))?));
        self.current = RwLock::new(Arc::new(ToolSet::new(0, self.fixed.clone())));
        Ok(())
    }

    /// Offers the MCP servers' tools besides the fixed ones (their names never shadow a fixed
    /// tool: [`McpTools`] leaves such a tool out).
    pub fn attach(&mut self, mcp: Arc<McpTools>) {
        self.mcp = Some(mcp);
    }

    /// The fixed tools' names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.fixed
            .iter()
            .map(|registered| registered.spec.name.as_str())
    }

    /// The fixed tools (`GET /tools` lists them before the MCP servers' tools).
    pub fn fixed(&self) -> impl Iterator<Item = (&ToolSpec, ToolSource)> {
        self.fixed
            .iter()
            .map(|registered| (&registered.spec, registered.tool.source()))
    }

    /// The MCP servers' tools, when attached.
    pub fn mcp(&self) -> Option<&Arc<McpTools>> {
        self.mcp.as_ref()
    }

    /// The tools now: the fixed ones and the MCP tools of the current catalog.
    pub fn current(&self) -> Arc<ToolSet> {
        let current = Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(|poison| poison.into_inner()),
        );
        let Some(mcp) = &self.mcp else {
            return current;
        };
        let catalog = mcp.catalog();
        if catalog.generation == current.generation {
            return current;
        }
        let filter = self.filter.as_ref();
        let tools = self
            .fixed
            .iter()
            .chain(catalog.tools.iter().filter(|registered| {
                filter.is_none_or(|filter| filter.allows(&registered.spec.name))
            }))
            .cloned()
            .collect();
        let rebuilt = Arc::new(ToolSet::new(catalog.generation, tools));
        *self
            .current
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = Arc::clone(&rebuilt);
        rebuilt
    }

    /// Runs one call against the tools of now (see [`ToolSet::call`]).
    pub async fn call(&self, call: &ToolCall) -> ToolOutcome {
        self.current().call(call).await
    }
}
