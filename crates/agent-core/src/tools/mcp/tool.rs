//! One tool of an MCP server as the agent calls it ([`McpTool`]), and the metrics of its calls.

use std::sync::Weak;
use std::time::Instant;

use async_trait::async_trait;
use metrics::{Counter, Histogram, Label, Recorder};
use rmcp::ServiceError;
use rmcp::model::CallToolRequestParams;
use serde_json::Value;

use super::{Server, client, content};
use crate::error::ToolError;
use crate::metrics::owned;
use crate::tools::{Tool, ToolSource};

/// How an MCP call ended: the `outcome` label of `agent_mcp_calls_total`.
#[derive(Debug, Clone, Copy)]
pub(super) enum Outcome {
    Ok = 0,
    /// The tool answered with `isError`, or the server refused the call.
    ToolError = 1,
    Timeout = 2,
    /// Not connected, a transport failure or a malformed answer.
    Failed = 3,
}

const OUTCOMES: [&str; 4] = ["ok", "tool_error", "timeout", "failed"];

#[derive(Debug)]
pub(super) struct CallMetrics {
    outcomes: [Counter; 4],
    duration: Histogram,
}

impl CallMetrics {
    pub(super) fn register(
        recorder: Option<&(dyn Recorder + Send + Sync)>,
        labels: Vec<Label>,
    ) -> Self {
        let Some(recorder) = recorder else {
            return Self {
                outcomes: [const { Counter::noop() }; 4],
                duration: Histogram::noop(),
            };
        };
        let metadata = &crate::metrics::METADATA;
        Self {
            outcomes: OUTCOMES.map(|outcome| {
                let mut labels = labels.clone();
                labels.push(Label::from_static_parts("outcome", outcome));
                recorder.register_counter(&owned("agent_mcp_calls_total", labels), metadata)
            }),
            duration: recorder
                .register_histogram(&owned("agent_mcp_call_duration_seconds", labels), metadata),
        }
    }

    pub(super) fn record(&self, started: Instant, outcome: Outcome) {
        self.duration.record(started.elapsed().as_secs_f64());
        self.outcomes[outcome as usize].increment(1);
    }
}

/// One tool of an MCP server, as the agent calls it.
#[derive(Debug)]
pub(super) struct McpTool {
    pub(super) server: Weak<Server>,
    pub(super) server_name: String,
    pub(super) name: String,
    pub(super) original: String,
    pub(super) description: String,
    pub(super) parameters: Value,
    pub(super) metrics: CallMetrics,
}

#[async_trait]
impl Tool for McpTool {
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn parameters(&self) -> Value {
        self.parameters.clone()
    }

    fn source(&self) -> ToolSource {
        ToolSource::Mcp {
            server: self.server_name.clone(),
        }
    }

    /// Calls the tool by its server's name, bounded by the server's timeout; dropping the
    /// future (a cancelled turn) cancels the request on the server.
    async fn call(&self, arguments: Value) -> Result<String, ToolError> {
        let started = Instant::now();
        let Some(server) = self.server.upgrade() else {
            return Err(ToolError::Failed("the MCP tools were stopped".to_owned()));
        };
        let peer = server.peer().map_err(|error| {
            self.metrics.record(started, Outcome::Failed);
            ToolError::Failed(error)
        })?;
        let arguments = match arguments {
            Value::Object(arguments) => arguments,
            _ => serde_json::Map::new(),
        };
        let mut request =
            CallToolRequestParams::new(self.original.clone()).with_arguments(arguments);
        // Trace context goes in `_meta` (the MCP convention, SEP-414), not in HTTP headers: the
        // connection's task sends the request, outside this call's span.
        let mut meta = rmcp::model::JsonObject::new();
        crate::trace_context::fields(&mut |name, value| {
            meta.insert(name.to_owned(), value.into());
        });
        if !meta.is_empty() {
            request.meta = Some(meta.into());
        }
        let timeout = server.options.timeout;
        let (outcome, result) = match tokio::time::timeout(timeout, peer.call_tool(request)).await {
            Err(_) => {
                // A slow tool, or a connection that stopped answering: the connection's task
                // pings to tell which.
                server.suspect.notify_one();
                (
                    Outcome::Timeout,
                    Err(format!(
                        "the MCP server {} did not answer within {timeout:?}",
                        self.server_name
                    )),
                )
            }
            Ok(Err(ServiceError::McpError(error))) => (
                Outcome::ToolError,
                Err(format!(
                    "the MCP server {} refused the call: {}",
                    self.server_name, error.message
                )),
            ),
            Ok(Err(error)) => {
                let broken = matches!(
                    error,
                    ServiceError::TransportSend(_) | ServiceError::TransportClosed
                );
                let error = format!(
                    "the call to MCP server {} failed: {}",
                    self.server_name,
                    client::cause(&error)
                );
                if broken {
                    server.connection_lost(&error);
                }
                (Outcome::Failed, Err(error))
            }
            Ok(Ok(result)) => {
                let text = content::render(&result, server.options.max_result_bytes);
                if result.is_error == Some(true) {
                    (Outcome::ToolError, Err(text))
                } else {
                    (Outcome::Ok, Ok(text))
                }
            }
        };
        self.metrics.record(started, outcome);
        result.map_err(ToolError::Failed)
    }
}
